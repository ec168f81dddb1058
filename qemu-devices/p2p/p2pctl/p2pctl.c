// SPDX-License-Identifier: GPL-2.0
/*
 * p2pctl - drive p2p_exporter and p2p_importer from one process, for tests.
 *
 *   p2pctl [-k] [-x /dev/p2p-exporterN] [-i [NAME=]/dev/p2p-importerN ...]
 *          [-f FILE|-] COMMAND [key=value ...] [COMMAND [key=value ...] ...]
 *
 * A word without '=' starts a command, words with '=' are its arguments;
 * ';' and blanks also separate words, so 'create size=64K; mmap' is fine.
 * Each command prints exactly one JSON object on its own line (stdout,
 * flushed). Every line has "op", "ok" and "t_ns" (CLOCK_REALTIME, the clock
 * of the kernel's event stamps); failures add "errno", "error" (EFOO),
 * "msg"; a fault caught while touching memory adds "signal" (SIGBUS...).
 *
 * Any command accepts expect=EFOO or expect=SIGBUS (or expect=ok): the line
 * then says "expected":true|false. The first unexpected outcome (a plain
 * command that failed, or an expectation not met) ends the run with exit
 * status 1 and a line on stderr naming the step; with -k the run goes on
 * and still ends with 1. 'exit code=N' ends with N only if everything so
 * far went as expected. -e (stop at the first failure) is the default and
 * accepted for old scripts. See README.md for the commands.
 *
 * Several importers: each -i opens one more (at most MAX_IMPS), named NAME
 * or, without NAME=, by its position ("0", "1", ...); the first is the
 * default. The importer commands (reg, dereg, mrinfo, dma-*, fork dma=1,
 * stats, close-importer) take imp=NAME; MR numbers and the default mr= are
 * per importer. One process can so map an exporter object once and register
 * it with two importer devices.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <p2p_testbed.h>

#define MAX_ARGS	16
#define MAX_OBJS	64
#define MAX_MAPS	64
#define MAX_WORDS	4096
#define BUS_PRINT_MAX	64
#define MAX_IMPS	4

struct arg {
	const char *key;
	const char *val;
};

struct cmd {
	const char *op;
	struct arg args[MAX_ARGS];
	int nargs;
};

struct obj {
	uint32_t handle;
	uint64_t size;
	uint64_t mmap_offset;
};

struct map {
	uint8_t *addr;
	uint64_t len;
	uint32_t handle;
};

static const char *exp_path = "/dev/p2p-exporter0";
/* An importer device this process may use: -i [NAME=]PATH, imp=NAME. */
struct importer {
	const char *name;
	const char *path;
	int fd;
	uint32_t last_mr;	/* default mr= on this importer */
};

static char imp_index_names[MAX_IMPS][4];
static struct importer imps[MAX_IMPS] = {
	{ "0", "/dev/p2p-importer0", -1, 0 },
};
static int nimps;		/* importers given with -i; 0: the default above */
static int exp_fd = -1;
static struct obj objs[MAX_OBJS];
static int nobjs;
static struct map maps[MAX_MAPS];
static int nmaps;
static bool keep_going;
static int unexpected;
static int step;		/* 1-based number of the command running */

/* ---- JSON line ---------------------------------------------------------- */

static char line[65536];
static size_t line_len;

static void jraw(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void jraw(const char *fmt, ...)
{
	va_list ap;
	int n;

	if (line_len >= sizeof(line))
		return;
	va_start(ap, fmt);
	n = vsnprintf(line + line_len, sizeof(line) - line_len, fmt, ap);
	va_end(ap);
	if (n > 0)
		line_len += (size_t)n;
	if (line_len >= sizeof(line))
		line_len = sizeof(line) - 1;
}

static void jkey(const char *key)
{
	jraw(",\"%s\":", key);
}

static void jstr(const char *key, const char *val)
{
	const char *p;

	jkey(key);
	jraw("\"");
	for (p = val; *p; p++) {
		unsigned char c = (unsigned char)*p;

		if (c == '"' || c == '\\')
			jraw("\\%c", c);
		else if (c < 0x20)
			jraw("\\u%04x", c);
		else
			jraw("%c", c);
	}
	jraw("\"");
}

static void jnum(const char *key, uint64_t v)
{
	jkey(key);
	jraw("%llu", (unsigned long long)v);
}

static void jint(const char *key, long long v)
{
	jkey(key);
	jraw("%lld", v);
}

static void jhex(const char *key, uint64_t v)
{
	jkey(key);
	jraw("\"0x%llx\"", (unsigned long long)v);
}

static void jbool(const char *key, bool v)
{
	jkey(key);
	jraw(v ? "true" : "false");
}

static uint64_t now_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void jbegin(const char *op)
{
	line_len = 0;
	jraw("{\"op\":\"%s\"", op);
}

/* ---- errors and expectations ------------------------------------------------ */

static const struct {
	int err;
	const char *name;
} errnames[] = {
	{ EPERM, "EPERM" }, { ENOENT, "ENOENT" }, { ESRCH, "ESRCH" },
	{ EINTR, "EINTR" }, { EIO, "EIO" }, { ENXIO, "ENXIO" },
	{ EBADF, "EBADF" }, { EAGAIN, "EAGAIN" }, { ENOMEM, "ENOMEM" },
	{ EACCES, "EACCES" }, { EFAULT, "EFAULT" }, { EBUSY, "EBUSY" },
	{ EEXIST, "EEXIST" }, { EXDEV, "EXDEV" }, { ENODEV, "ENODEV" },
	{ EINVAL, "EINVAL" }, { ENOSPC, "ENOSPC" }, { ENOTTY, "ENOTTY" },
	{ ERANGE, "ERANGE" }, { ENOSYS, "ENOSYS" }, { ETIMEDOUT, "ETIMEDOUT" },
	{ EOPNOTSUPP, "EOPNOTSUPP" }, { ECANCELED, "ECANCELED" },
	{ ENOEXEC, "ENOEXEC" },
};

static const char *errname(int err)
{
	size_t i;

	for (i = 0; i < sizeof(errnames) / sizeof(errnames[0]); i++)
		if (errnames[i].err == err)
			return errnames[i].name;
	return "E?";
}

static const char *signame(int sig)
{
	switch (sig) {
	case SIGBUS: return "SIGBUS";
	case SIGSEGV: return "SIGSEGV";
	default: return "SIG?";
	}
}

/* Outcome of the current command: ok, errno, or a caught signal. */
static int cur_errno, cur_signal;

static void jfail(int err, const char *what)
{
	cur_errno = err;
	jbool("ok", false);
	jint("errno", err);
	jstr("error", errname(err));
	jstr("msg", what ? what : strerror(err));
}

static void jfail_signal(int sig)
{
	cur_signal = sig;
	jbool("ok", false);
	jstr("signal", signame(sig));
}

static const char *arg(const struct cmd *c, const char *key)
{
	int i;

	for (i = 0; i < c->nargs; i++)
		if (!strcmp(c->args[i].key, key))
			return c->args[i].val;
	return NULL;
}

static void jend(const struct cmd *c)
{
	const char *want = arg(c, "expect");
	bool got_ok = !cur_errno && !cur_signal;
	bool match;

	if (!want || !strcmp(want, "ok"))
		match = got_ok;
	else if (!strncmp(want, "SIG", 3))
		match = cur_signal && !strcmp(want, signame(cur_signal));
	else
		match = cur_errno && !strcmp(want, errname(cur_errno));
	if (want)
		jbool("expected", match);
	if (!match)
		unexpected++;
	jnum("t_ns", now_ns(CLOCK_REALTIME));
	jraw("}");
	fwrite(line, 1, line_len, stdout);
	fputc('\n', stdout);
	fflush(stdout);
	if (match)
		return;
	fprintf(stderr, "p2pctl: step %d '%s' failed: %s%s%s\n", step, c->op ? c->op : "?",
		cur_signal ? signame(cur_signal) : cur_errno ? errname(cur_errno) : "ok",
		want ? ", expected " : "", want ? want : "");
	if (!keep_going) {
		fprintf(stderr, "p2pctl: stopping at step %d (-k goes on)\n", step);
		exit(1);
	}
}

/* ---- argument parsing -------------------------------------------------------- */

static bool parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	int shift = 0;

	/* strtoull() takes "-1" for ULLONG_MAX: refuse a sign */
	if (!s || !*s || *s == '-' || *s == '+')
		return false;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s)
		return false;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	default: break;
	}
	if (*end || v > (~0ULL >> shift))
		return false;
	*out = v << shift;
	return true;
}

/* @key as a number, @def if absent; false (and a JSON failure) if malformed. */
static bool num_arg(const struct cmd *c, const char *key, uint64_t def,
		    uint64_t *out)
{
	const char *s = arg(c, key);

	if (!s) {
		*out = def;
		return true;
	}
	if (parse_u64(s, out))
		return true;
	jfail(EINVAL, "malformed number");
	jstr("arg", key);
	return false;
}

/* ---- devices ------------------------------------------------------------------- */

static int need_fd(int *fd, const char *path)
{
	if (*fd < 0)
		*fd = open(path, O_RDWR | O_CLOEXEC);
	return *fd < 0 ? -errno : 0;
}

/*
 * The object (obj=, default: the last created) or mapping (map=, default: the last made) a
 * command names. NULL when there is none, after reporting why: callers just return.
 */
static struct obj *find_obj(const struct cmd *c)
{
	uint64_t h;
	int i;

	if (!num_arg(c, "obj", nobjs ? objs[nobjs - 1].handle : 0, &h))
		return NULL;
	for (i = nobjs - 1; i >= 0; i--)
		if (objs[i].handle == h)
			return &objs[i];
	jfail(ENOENT, "no such object");
	return NULL;
}

static struct map *find_map(const struct cmd *c)
{
	uint64_t k;

	if (!num_arg(c, "map", (uint64_t)nmaps, &k))
		return NULL;
	if (k < 1 || k > (uint64_t)nmaps || !maps[k - 1].addr) {
		jfail(ENOENT, "no such mapping");
		return NULL;
	}
	return &maps[k - 1];
}

/*
 * The importer a command names (imp=NAME, default: the first). NULL after
 * reporting an unknown name. Lines of importer commands carry "imp" when
 * more than one importer was given, or when imp= was.
 */
static struct importer *find_imp(const struct cmd *c)
{
	const char *name = arg(c, "imp");
	int i, n = nimps ? nimps : 1;

	if (!name) {
		if (n > 1)
			jstr("imp", imps[0].name);
		return &imps[0];
	}
	jstr("imp", name);
	for (i = 0; i < n; i++)
		if (!strcmp(imps[i].name, name))
			return &imps[i];
	jfail(EINVAL, "no such importer (-i NAME=PATH names one)");
	return NULL;
}

/* ---- memory access with SIGBUS/SIGSEGV caught --------------------------------------- */

static sigjmp_buf fault_env;
static volatile sig_atomic_t fault_armed, fault_sig;

static void fault_handler(int sig)
{
	if (!fault_armed) {
		signal(sig, SIG_DFL);
		raise(sig);
		return;
	}
	fault_sig = sig;
	siglongjmp(fault_env, 1);
}

static volatile sig_atomic_t hold_signal;

static void hold_handler(int sig)
{
	hold_signal = sig;
}

static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n)
{
	int k;

	crc = ~crc;
	while (n--) {
		crc ^= *p++;
		for (k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0xedb88320U & (0U - (crc & 1)));
	}
	return ~crc;
}

/*
 * Report crc32, the head in hex, and whether @buf matches want=/want-seq=.
 * A mismatch, or a malformed want=, is the command's failure (it says
 * "ok":false itself); the caller says "ok":true only if !cur_errno.
 */
static void report_data(const struct cmd *c, const uint8_t *buf, uint64_t len)
{
	char head[2 * 32 + 1];
	uint64_t i, want = 0, seq = 0;
	bool have_want = false, have_seq = false;
	int64_t mismatch = -1;

	for (i = 0; i < len && i < 32; i++)
		snprintf(head + 2 * i, 3, "%02x", buf[i]);
	head[2 * (len < 32 ? len : 32)] = 0;
	jnum("len", len);
	jhex("crc32", crc32_update(0, buf, len));
	jstr("head", head);
	if (arg(c, "want-seq")) {
		if (!num_arg(c, "want-seq", 0, &seq))
			return;
		have_seq = true;
	} else if (arg(c, "want")) {
		if (!num_arg(c, "want", 0, &want))
			return;
		have_want = true;
	}
	if (!have_want && !have_seq)
		return;
	for (i = 0; i < len; i++) {
		uint8_t e = have_seq ? (uint8_t)(seq + i) : (uint8_t)want;

		if (buf[i] != e) {
			mismatch = (int64_t)i;
			break;
		}
	}
	jbool("match", mismatch < 0);
	if (mismatch >= 0) {
		jint("first_mismatch", mismatch);
		jfail(EIO, "data does not match");
	}
}

/* ---- commands ---------------------------------------------------------------------- */

static void do_create(const struct cmd *c)
{
	struct p2p_create_object req = { 0 };
	uint64_t size, nopin;

	if (!num_arg(c, "size", 65536, &size) || !num_arg(c, "nopin", 0, &nopin))
		return;
	if (nobjs == MAX_OBJS)
		return jfail(ENOSPC, "too many objects");
	if (need_fd(&exp_fd, exp_path))
		return jfail(errno, exp_path);
	req.size = size;
	req.flags = nopin ? P2P_OBJ_NO_PIN : 0;
	if (ioctl(exp_fd, P2P_EXP_CREATE_OBJECT, &req))
		return jfail(errno, NULL);
	objs[nobjs].handle = req.handle;
	objs[nobjs].size = (size + 4095) & ~4095ULL;
	objs[nobjs].mmap_offset = req.mmap_offset;
	nobjs++;
	jbool("ok", true);
	jnum("handle", req.handle);
	jnum("size", objs[nobjs - 1].size);
	jhex("offset", req.offset);
	jhex("bus", req.bus_addr);
	jhex("mmap_offset", req.mmap_offset);
}

static void do_destroy(const struct cmd *c)
{
	struct obj *o = find_obj(c);

	if (!o)
		return;
	jnum("handle", o->handle);
	if (ioctl(exp_fd, P2P_EXP_DESTROY_OBJECT, &o->handle))
		return jfail(errno, NULL);
	jbool("ok", true);
}

static void do_info(const struct cmd *c)
{
	struct p2p_object_info info = { 0 };
	struct obj *o = find_obj(c);

	if (!o)
		return;
	info.handle = o->handle;
	jnum("handle", o->handle);
	if (ioctl(exp_fd, P2P_EXP_OBJECT_INFO, &info))
		return jfail(errno, NULL);
	jbool("ok", true);
	jnum("size", info.size);
	jhex("offset", info.offset);
	jhex("bus", info.bus_addr);
	jnum("importers", info.importers);
	jnum("generation", info.generation);
	jbool("nopin", info.flags & P2P_OBJ_NO_PIN);
}

/* Anonymous memory, to show that an importer refuses what no exporter owns. */
static void do_mmap_anon(const struct cmd *c)
{
	uint64_t len;
	void *p;

	if (!num_arg(c, "len", 65536, &len))
		return;
	if (nmaps == MAX_MAPS)
		return jfail(ENOSPC, "too many mappings");
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		 -1, 0);
	if (p == MAP_FAILED)
		return jfail(errno, NULL);
	maps[nmaps].addr = p;
	maps[nmaps].len = len;
	maps[nmaps].handle = 0;
	nmaps++;
	jbool("ok", true);
	jnum("map", nmaps);
	jbool("anon", true);
	jhex("addr", (uintptr_t)p);
	jnum("len", len);
}

static void do_mmap(const struct cmd *c)
{
	uint64_t off, len, ro, anon;
	struct obj *o;
	void *p;

	if (!num_arg(c, "anon", 0, &anon))
		return;
	if (anon)
		return do_mmap_anon(c);
	o = find_obj(c);
	if (!o)
		return;
	if (!num_arg(c, "off", 0, &off) || !num_arg(c, "len", o->size - off, &len) ||
	    !num_arg(c, "ro", 0, &ro))
		return;
	if (nmaps == MAX_MAPS)
		return jfail(ENOSPC, "too many mappings");
	p = mmap(NULL, len, PROT_READ | (ro ? 0 : PROT_WRITE), MAP_SHARED,
		 exp_fd, (off_t)(o->mmap_offset + off));
	if (p == MAP_FAILED)
		return jfail(errno, NULL);
	maps[nmaps].addr = p;
	maps[nmaps].len = len;
	maps[nmaps].handle = o->handle;
	nmaps++;
	jbool("ok", true);
	jnum("map", nmaps);
	jnum("handle", o->handle);
	jhex("addr", (uintptr_t)p);
	jnum("len", len);
}

static void do_munmap(const struct cmd *c)
{
	struct map *m = find_map(c);

	if (!m)
		return;
	jnum("map", (uint64_t)(m - maps) + 1);
	if (munmap(m->addr, m->len))
		return jfail(errno, NULL);
	m->addr = NULL;
	jbool("ok", true);
}

/* mprotect prot=r|rw|none: change the whole mapping's protection. */
static void do_mprotect(const struct cmd *c)
{
	const char *p = arg(c, "prot");
	struct map *m = find_map(c);
	int prot;

	if (!m)
		return;
	jnum("map", (uint64_t)(m - maps) + 1);
	if (!p)
		p = "r";
	if (!strcmp(p, "r"))
		prot = PROT_READ;
	else if (!strcmp(p, "rw"))
		prot = PROT_READ | PROT_WRITE;
	else if (!strcmp(p, "none"))
		prot = PROT_NONE;
	else
		return jfail(EINVAL, "prot is r, rw or none");
	jstr("prot", p);
	if (mprotect(m->addr, m->len, prot))
		return jfail(errno, NULL);
	jbool("ok", true);
}

/* mremap len=N with MREMAP_MAYMOVE: the mapping's new address and length. */
static void do_mremap(const struct cmd *c)
{
	struct map *m = find_map(c);
	uint64_t len;
	void *p;

	if (!m)
		return;
	jnum("map", (uint64_t)(m - maps) + 1);
	if (!num_arg(c, "len", m->len, &len))
		return;
	jhex("old_addr", (uintptr_t)m->addr);
	p = mremap(m->addr, m->len, len, MREMAP_MAYMOVE);
	if (p == MAP_FAILED)
		return jfail(errno, NULL);
	jbool("moved", p != (void *)m->addr);
	m->addr = p;
	m->len = len;
	jbool("ok", true);
	jhex("addr", (uintptr_t)p);
	jnum("len", len);
}

/*
 * fork: the child touches the mapping (touch=1: map=, off=0; write=0 reads,
 * write=1 writes pattern=) and, with dma=1, asks the importer (the inherited
 * file) for a dma-write of 64 bytes pattern= to mr= (the last MR), then exits.
 * touch=0 needs no mapping (e.g. after munmap). The parent reports what the
 * child saw: child_touch ("ok", "SIGSEGV", "SIGBUS"), child_value, child_dma
 * ("ok" or "EFOO"), child_status. The child reports through a pipe; the
 * command fails only if fork/wait did.
 */
struct fork_report {
	int sig;		/* signal caught while touching, 0: none */
	int value;		/* byte read, -1: none */
	int dma_err;		/* 0 ok, errno, -1: not tried */
};

static void do_fork(const struct cmd *c)
{
	uint64_t off, wr, pattern, dma, touch, mr;
	struct fork_report r = { 0, -1, -1 };
	struct importer *volatile imp = NULL;	/* read in the child after sigsetjmp */
	struct map *m = NULL;
	int pfd[2], status;
	ssize_t n;
	pid_t pid;

	if (!num_arg(c, "touch", 1, &touch) || !num_arg(c, "off", 0, &off) ||
	    !num_arg(c, "write", 0, &wr) || !num_arg(c, "pattern", 0, &pattern) ||
	    !num_arg(c, "dma", 0, &dma))
		return;
	if (dma) {
		imp = find_imp(c);
		if (!imp || !num_arg(c, "mr", imp->last_mr, &mr))
			return;
	}
	if (touch) {
		m = find_map(c);
		if (!m)
			return;
		jnum("map", (uint64_t)(m - maps) + 1);
		if (off >= m->len)
			return jfail(ERANGE, "outside the mapping");
	}
	if (dma)
		jnum("mr", mr);
	if (pipe(pfd))
		return jfail(errno, NULL);
	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		close(pfd[0]);
		close(pfd[1]);
		return jfail(errno, NULL);
	}
	if (!pid) {
		volatile uint8_t *p = m ? m->addr + off : NULL;

		close(pfd[0]);
		fault_sig = 0;
		if (!p) {
			/* touch=0 */
		} else if (!sigsetjmp(fault_env, 1)) {
			fault_armed = 1;
			if (wr)
				*p = (uint8_t)pattern;
			r.value = *p;
		} else {
			r.sig = fault_sig;
		}
		fault_armed = 0;
		if (dma) {
			struct p2p_dma d = { 0 };

			d.mr = (uint32_t)mr;
			d.dir = P2P_DMA_TO_PEER;
			d.len = 64;
			d.flags = P2P_DMA_PATTERN;
			d.pattern = (uint32_t)pattern;
			r.dma_err = imp->fd < 0 ? EBADF :
				    ioctl(imp->fd, P2P_IMP_DMA, &d) ? errno : 0;
		}
		n = write(pfd[1], &r, sizeof(r));
		_exit(n == (ssize_t)sizeof(r) ? 0 : 3);
	}
	close(pfd[1]);
	jint("child", pid);
	n = read(pfd[0], &r, sizeof(r));
	close(pfd[0]);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return jfail(errno, "waitpid");
	if (n != (ssize_t)sizeof(r))
		return jfail(EIO, "the child did not report");
	if (m)
		jstr("child_touch", r.sig ? signame(r.sig) : "ok");
	if (r.value >= 0)
		jhex("child_value", (uint64_t)r.value);
	if (r.dma_err >= 0)
		jstr("child_dma", r.dma_err ? errname(r.dma_err) : "ok");
	jint("child_status", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	jbool("ok", true);
}

/* CPU access through a mapping: write, read, touch. */
static void do_access(const struct cmd *c, char kind)
{
	uint64_t off, len, pattern = 0, seq = 0, i;
	bool use_seq = arg(c, "seq") != NULL;
	struct map *m = find_map(c);
	uint8_t *copy = NULL;
	uint8_t value = 0;
	uint64_t t0;

	if (!m)
		return;
	if (!num_arg(c, "off", 0, &off))
		return;
	if (kind == 't')
		len = 1;
	else if (!num_arg(c, "len", m->len > off ? m->len - off : 0, &len))
		return;
	if (!num_arg(c, "pattern", 0, &pattern) || !num_arg(c, "seq", 0, &seq))
		return;
	jnum("map", (uint64_t)(m - maps) + 1);
	jnum("off", off);
	if (off > m->len || len > m->len - off)
		return jfail(ERANGE, "outside the mapping");
	if (kind == 'r') {
		copy = malloc(len ? len : 1);
		if (!copy)
			return jfail(ENOMEM, NULL);
	}
	t0 = now_ns(CLOCK_MONOTONIC);
	fault_sig = 0;
	if (sigsetjmp(fault_env, 1)) {
		fault_armed = 0;
		free(copy);
		return jfail_signal(fault_sig);
	}
	fault_armed = 1;
	if (kind == 'w') {
		volatile uint8_t *p = m->addr + off;

		for (i = 0; i < len; i++)
			p[i] = use_seq ? (uint8_t)(seq + i) : (uint8_t)pattern;
	} else if (kind == 'r') {
		volatile uint8_t *p = m->addr + off;

		for (i = 0; i < len; i++)
			copy[i] = p[i];
	} else {
		volatile uint8_t *p = m->addr + off;
		uint64_t w = 0;

		num_arg(c, "write", 0, &w);
		if (w)
			*p = (uint8_t)pattern;
		value = *p;
	}
	fault_armed = 0;
	jnum("ns", now_ns(CLOCK_MONOTONIC) - t0);
	if (kind == 'r') {
		report_data(c, copy, len);
		free(copy);
	} else if (kind == 't') {
		jhex("value", value);
	} else {
		jnum("len", len);
	}
	if (!cur_errno)
		jbool("ok", true);
}

static void print_bus(const uint64_t *bus, uint32_t n)
{
	uint32_t i;
	bool contiguous = true;

	jkey("bus");
	jraw("[");
	for (i = 0; i < n && i < BUS_PRINT_MAX; i++)
		jraw("%s\"0x%llx\"", i ? "," : "", (unsigned long long)bus[i]);
	jraw("]");
	for (i = 1; i < n; i++)
		if (bus[i] != bus[i - 1] + 4096)
			contiguous = false;
	jbool("bus_contiguous", contiguous);
}

static void do_reg(const struct cmd *c)
{
	struct p2p_reg_mr req = { 0 };
	uint64_t off, len, pin, wr, want_bus;
	uint64_t *bus = NULL;
	struct map *m = find_map(c);
	struct importer *imp;

	if (!m)
		return;
	imp = find_imp(c);
	if (!imp)
		return;
	if (!num_arg(c, "off", 0, &off))
		return;
	if (off > m->len)
		return jfail(EINVAL, "off is beyond the mapping");
	if (!num_arg(c, "len", m->len - off, &len) || !num_arg(c, "pin", 0, &pin) ||
	    !num_arg(c, "write", 1, &wr) || !num_arg(c, "bus", 1, &want_bus))
		return;
	if (need_fd(&imp->fd, imp->path))
		return jfail(errno, imp->path);
	/* bus=0: do not ask for the addresses (lets a test hand the kernel any len) */
	if (want_bus) {
		bus = calloc(len / 4096 + 1, sizeof(*bus));
		if (!bus)
			return jfail(ENOMEM, NULL);
	}
	req.addr = (uintptr_t)m->addr + off;
	req.len = len;
	req.flags = (pin ? P2P_MR_PIN : 0) | (wr ? P2P_MR_WRITE : 0);
	req.bus_addrs = (uintptr_t)bus;
	req.bus_len = bus ? (uint32_t)(len / 4096) : 0;
	if (ioctl(imp->fd, P2P_IMP_REG_MR, &req)) {
		free(bus);
		return jfail(errno, NULL);
	}
	imp->last_mr = req.mr;
	jbool("ok", true);
	jnum("mr", req.mr);
	jnum("npages", req.npages);
	if (bus)
		print_bus(bus, req.npages);
	free(bus);
}

/* The importer (imp=) and its MR (mr=, default: its last registered). */
static struct importer *mr_arg(const struct cmd *c, uint32_t *mr)
{
	struct importer *imp = find_imp(c);
	uint64_t v;

	if (!imp || !num_arg(c, "mr", imp->last_mr, &v))
		return NULL;
	*mr = (uint32_t)v;
	jnum("mr", *mr);
	if (imp->fd < 0) {
		jfail(EBADF, "importer not open");
		return NULL;
	}
	return imp;
}

static void do_dereg(const struct cmd *c)
{
	struct importer *imp;
	uint32_t mr;

	imp = mr_arg(c, &mr);
	if (!imp)
		return;
	if (ioctl(imp->fd, P2P_IMP_DEREG_MR, &mr))
		return jfail(errno, NULL);
	jbool("ok", true);
}

static void do_mrinfo(const struct cmd *c)
{
	struct p2p_mr_info info = { 0 };
	uint64_t bus[BUS_PRINT_MAX];
	struct importer *imp;

	imp = mr_arg(c, &info.mr);
	if (!imp)
		return;
	info.bus_addrs = (uintptr_t)bus;
	info.bus_len = BUS_PRINT_MAX;
	if (ioctl(imp->fd, P2P_IMP_MR_INFO, &info))
		return jfail(errno, NULL);
	jhex("addr", info.addr);
	jnum("len", info.len);
	jnum("npages", info.npages);
	jbool("valid", info.valid);
	jbool("mapped", info.mapped);
	jnum("maps", info.maps);
	jnum("invalidations", info.invalidations);
	print_bus(bus, info.npages < BUS_PRINT_MAX ? info.npages : BUS_PRINT_MAX);
	/* want-valid=0|1: the MR's state is the command's outcome, like read's want= */
	if (arg(c, "want-valid")) {
		uint64_t want;

		if (!num_arg(c, "want-valid", 0, &want))
			return;
		if (want != (uint64_t)!!info.valid)
			return jfail(EIO, info.valid ? "the MR is valid" : "the MR is not valid");
	}
	jbool("ok", true);
}

static void dma_report(const struct p2p_dma *d)
{
	jhex("bus", d->bus_addr);
	jbool("remapped", d->remapped);
	jnum("segments", d->segments);
	jnum("ns", d->ns);
	jnum("peer_ns", d->peer_ns);
}

static uint8_t dma_buf[P2P_DMA_MAX];

static void do_dma(const struct cmd *c, bool to_peer)
{
	struct p2p_dma d = { 0 };
	uint64_t off, len, pattern, seq, async;
	struct importer *imp;

	imp = mr_arg(c, &d.mr);
	if (!imp)
		return;
	if (!num_arg(c, "off", 0, &off) || !num_arg(c, "len", 4096, &len) ||
	    !num_arg(c, "pattern", 0, &pattern) || !num_arg(c, "seq", 0, &seq) ||
	    !num_arg(c, "async", 0, &async))
		return;
	d.dir = to_peer ? P2P_DMA_TO_PEER : P2P_DMA_FROM_PEER;
	d.offset = off;
	d.len = len;
	if (to_peer) {
		d.flags = arg(c, "seq") ? P2P_DMA_SEQ : P2P_DMA_PATTERN;
		d.pattern = (uint32_t)(arg(c, "seq") ? seq : pattern);
	} else {
		d.buf = (uintptr_t)dma_buf;
	}
	if (async)
		d.flags |= P2P_DMA_ASYNC;
	jnum("off", off);
	jnum("len", len);
	if (ioctl(imp->fd, P2P_IMP_DMA, &d))
		return jfail(errno, NULL);
	if (async) {
		jbool("ok", true);
		jbool("queued", true);
		return;
	}
	dma_report(&d);
	if (!to_peer)
		report_data(c, dma_buf, len);
	if (!cur_errno)
		jbool("ok", true);
}

static void do_dma_wait(const struct cmd *c)
{
	struct p2p_dma_wait w = { 0 };
	struct importer *imp = find_imp(c);

	if (!imp)
		return;
	if (imp->fd < 0)
		return jfail(EBADF, "importer not open");
	if (ioctl(imp->fd, P2P_IMP_DMA_WAIT, &w))
		return jfail(errno, NULL);
	jnum("mr", w.dma.mr);
	jstr("dir", w.dma.dir == P2P_DMA_TO_PEER ? "to_peer" : "from_peer");
	if (w.result)
		return jfail(-w.result, NULL);
	dma_report(&w.dma);
	if (w.dma.dir == P2P_DMA_FROM_PEER)
		report_data(c, dma_buf, w.dma.len);
	if (!cur_errno)
		jbool("ok", true);
}

static void do_evict(const struct cmd *c)
{
	struct p2p_evict ev = { 0 };
	struct obj *o = find_obj(c);

	if (!o)
		return;
	ev.handle = o->handle;
	jnum("handle", o->handle);
	if (ioctl(exp_fd, P2P_EXP_EVICT, &ev))
		return jfail(errno, NULL);
	jbool("ok", true);
	jhex("old", ev.old_offset);
	jhex("new", ev.new_offset);
	jnum("importers", ev.importers);
	jnum("zap_ns", ev.zap_ns);
	jnum("wait_ns", ev.wait_ns);
	jbool("timed_out", ev.timed_out);
}

static void print_stats(const char *key, const char *const *names,
			const uint64_t *v, int n)
{
	int i;

	jkey(key);
	jraw("{");
	for (i = 0; i < n; i++)
		jraw("%s\"%s\":%llu", i ? "," : "", names[i],
		     (unsigned long long)v[i]);
	jraw("}");
}

static const char *const exp_names[] = {
	"objects", "objects_created", "maps", "unmaps", "imports",
	"evictions", "evict_timeouts", "evict_busy", "refused",
	"p2p_denied", "faults", "unplug_waits", "unplug_timeouts",
	"leaked_pages",
};

static const char *const imp_names[] = {
	"mrs", "maps", "unmaps", "invalidations", "remaps",
	"dma_ok", "dma_failed", "refused", "map_errors",
};

static void do_stats(const struct cmd *c)
{
	struct p2p_exporter_info ei;
	struct p2p_importer_info ii;
	struct importer *imp = find_imp(c);
	bool any = false;

	if (!imp)
		return;
	_Static_assert(sizeof(ei.stats) == sizeof(exp_names) / sizeof(exp_names[0]) * 8,
		       "exporter stat names");
	_Static_assert(sizeof(ii.stats) == sizeof(imp_names) / sizeof(imp_names[0]) * 8,
		       "importer stat names");
	if (!need_fd(&exp_fd, exp_path) && !ioctl(exp_fd, P2P_EXP_INFO, &ei)) {
		any = true;
		jkey("exporter");
		jraw("{\"bdf\":\"%.16s\",\"dead\":%s,\"bar_size\":%llu,\"bar_bus\":\"0x%llx\"",
		     ei.bdf, ei.dead ? "true" : "false",
		     (unsigned long long)ei.bar_size,
		     (unsigned long long)ei.bar_bus);
		print_stats("stats", exp_names, (const uint64_t *)&ei.stats,
			    sizeof(exp_names) / sizeof(exp_names[0]));
		jraw("}");
	}
	if (!need_fd(&imp->fd, imp->path) && !ioctl(imp->fd, P2P_IMP_INFO, &ii)) {
		any = true;
		jkey("importer");
		jraw("{\"bdf\":\"%.16s\",\"dead\":%s", ii.bdf,
		     ii.dead ? "true" : "false");
		print_stats("stats", imp_names, (const uint64_t *)&ii.stats,
			    sizeof(imp_names) / sizeof(imp_names[0]));
		jraw("}");
	}
	if (!any)
		return jfail(ENODEV, "neither device could be opened");
	jbool("ok", true);
}

static void do_hold(const struct cmd *c)
{
	const char *file = arg(c, "file");
	uint64_t timeout_s, t0 = now_ns(CLOCK_MONOTONIC);
	struct sigaction sa = { 0 };
	struct stat st;
	const char *reason = "timeout";

	if (!num_arg(c, "timeout", 600, &timeout_s))
		return;
	if (timeout_s > UINT64_MAX / 1000000000ULL)	/* i.e. forever */
		timeout_s = UINT64_MAX / 1000000000ULL;
	sa.sa_handler = hold_handler;
	sigaction(SIGUSR1, &sa, NULL);
	hold_signal = 0;

	/* Announce that the mappings are held, before waiting. */
	{
		size_t saved = line_len;

		jstr("state", "holding");
		if (file)
			jstr("file", file);
		jint("pid", getpid());
		jnum("t_ns", now_ns(CLOCK_REALTIME));
		jraw("}");
		fwrite(line, 1, line_len, stdout);
		fputc('\n', stdout);
		fflush(stdout);
		line_len = saved;
	}
	for (;;) {
		if (hold_signal) {
			reason = "signal";
			break;
		}
		if (file && !stat(file, &st)) {
			reason = "file";
			break;
		}
		if (now_ns(CLOCK_MONOTONIC) - t0 >= timeout_s * 1000000000ULL)
			break;
		usleep(20000);
	}
	jstr("state", "released");
	jstr("reason", reason);
	jnum("held_ms", (now_ns(CLOCK_MONOTONIC) - t0) / 1000000);
	if (!strcmp(reason, "timeout"))
		return jfail(ETIMEDOUT, "hold timed out");
	jbool("ok", true);
}

/*
 * insmod file=PATH.ko params=a=1,b=2 / rmmod name=MODULE: load or unload a
 * kernel module (finit_module, delete_module with O_NONBLOCK like busybox's
 * rmmod), so a scenario sees the kernel's errno: EEXIST (loaded already),
 * ENOENT (unknown symbol on load; not loaded on unload), EAGAIN (in use: an
 * open file, a mapping, or a module that uses its symbols).
 */
static void do_insmod(const struct cmd *c)
{
	const char *file = arg(c, "file"), *params = arg(c, "params");
	char buf[1024], *p;
	int fd;

	if (!file)
		return jfail(EINVAL, "insmod needs file=PATH");
	jstr("file", file);
	snprintf(buf, sizeof(buf), "%s", params ? params : "");
	for (p = buf; *p; p++)	/* a=1,b=2: the kernel wants blanks between */
		if (*p == ',')
			*p = ' ';
	if (params)
		jstr("params", buf);
	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return jfail(errno, file);
	if (syscall(SYS_finit_module, fd, buf, 0)) {
		int err = errno;

		close(fd);
		return jfail(err, NULL);
	}
	close(fd);
	jbool("ok", true);
}

static void do_rmmod(const struct cmd *c)
{
	const char *name = arg(c, "name");

	if (!name)
		return jfail(EINVAL, "rmmod needs name=MODULE");
	jstr("name", name);
	if (syscall(SYS_delete_module, name, O_NONBLOCK))
		return jfail(errno, NULL);
	jbool("ok", true);
}

static void do_sleep(const struct cmd *c)
{
	struct timespec ts;
	uint64_t ms;

	if (!num_arg(c, "ms", 100, &ms))
		return;
	ts.tv_sec = (time_t)(ms / 1000);
	ts.tv_nsec = (long)(ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
	jnum("ms", ms);
	jbool("ok", true);
}

static void do_close(int *fd)
{
	if (*fd >= 0 && close(*fd))
		return jfail(errno, NULL);
	*fd = -1;
	jbool("ok", true);
}

static void usage(void)
{
	fputs("usage: p2pctl [-k] [-x EXPORTER_DEV] [-i [NAME=]IMPORTER_DEV ...] [-f FILE|-] COMMAND [key=value ...] ...\n"
	      "commands: create destroy info mmap munmap mprotect mremap fork write read touch\n"
	      "          reg dereg mrinfo\n"
	      "          dma-write dma-read dma-wait evict stats hold sleep mark insmod rmmod\n"
	      "          close-exporter close-importer exit (see README.md)\n", stderr);
}

/*
 * fail=1 on any command: this process is a fault-injection target for that
 * command only (/proc/self/make-it-fail is 1 around it), so failslab or
 * fail_page_alloc armed with task-filter (the testbed's 'fault' step) make
 * its kernel allocations fail, and nothing else in the guest. The file is
 * opened once, before any command is armed, so arming allocates nothing.
 */
static int fail_fd = -2;	/* -2: not opened yet */

static bool make_it_fail(bool on)
{
	if (fail_fd == -2)
		fail_fd = open("/proc/self/make-it-fail", O_WRONLY | O_CLOEXEC);
	if (fail_fd < 0)
		return false;
	return pwrite(fail_fd, on ? "1" : "0", 1, 0) == 1;
}

static void dispatch(const struct cmd *c);

static void run(const struct cmd *c)
{
	uint64_t fail = 0;

	cur_errno = 0;
	cur_signal = 0;
	jbegin(c->op);
	if (arg(c, "fail")) {
		if (!num_arg(c, "fail", 0, &fail))
			goto out;
		if (fail && !make_it_fail(true)) {
			jfail(errno, "fail=1: no /proc/self/make-it-fail (a kernel without CONFIG_FAULT_INJECTION)");
			goto out;
		}
		jbool("fail_armed", fail);
	}
	dispatch(c);
	if (fail)
		make_it_fail(false);
out:
	/* a failure path may not have said "ok" yet */
	if (!strstr(line, "\"ok\":"))
		jbool("ok", !cur_errno && !cur_signal);
	jend(c);
}

static void dispatch(const struct cmd *c)
{
	const char *op = c->op;

	if (!strcmp(op, "create"))
		do_create(c);
	else if (!strcmp(op, "destroy"))
		do_destroy(c);
	else if (!strcmp(op, "info"))
		do_info(c);
	else if (!strcmp(op, "mmap"))
		do_mmap(c);
	else if (!strcmp(op, "munmap"))
		do_munmap(c);
	else if (!strcmp(op, "mprotect"))
		do_mprotect(c);
	else if (!strcmp(op, "mremap"))
		do_mremap(c);
	else if (!strcmp(op, "fork"))
		do_fork(c);
	else if (!strcmp(op, "write"))
		do_access(c, 'w');
	else if (!strcmp(op, "read"))
		do_access(c, 'r');
	else if (!strcmp(op, "touch"))
		do_access(c, 't');
	else if (!strcmp(op, "reg"))
		do_reg(c);
	else if (!strcmp(op, "dereg"))
		do_dereg(c);
	else if (!strcmp(op, "mrinfo"))
		do_mrinfo(c);
	else if (!strcmp(op, "dma-write"))
		do_dma(c, true);
	else if (!strcmp(op, "dma-read"))
		do_dma(c, false);
	else if (!strcmp(op, "dma-wait"))
		do_dma_wait(c);
	else if (!strcmp(op, "evict"))
		do_evict(c);
	else if (!strcmp(op, "stats"))
		do_stats(c);
	else if (!strcmp(op, "hold"))
		do_hold(c);
	else if (!strcmp(op, "sleep"))
		do_sleep(c);
	else if (!strcmp(op, "insmod"))
		do_insmod(c);
	else if (!strcmp(op, "rmmod"))
		do_rmmod(c);
	else if (!strcmp(op, "mark")) {
		jstr("name", arg(c, "name") ? arg(c, "name") : "");
		jbool("ok", true);
	} else if (!strcmp(op, "close-exporter"))
		do_close(&exp_fd);
	else if (!strcmp(op, "close-importer")) {
		struct importer *imp = find_imp(c);

		if (imp)
			do_close(&imp->fd);
	}
	else if (!strcmp(op, "exit")) {
		uint64_t code = 0;

		num_arg(c, "code", 0, &code);
		jbool("ok", true);
		jend(c);
		/* an earlier failure (with -k) is not hidden by a final exit */
		exit(unexpected ? 1 : (int)code);
	} else
		jfail(EINVAL, "unknown command");
}

/* ---- word splitting ------------------------------------------------------------------ */

static char *words[MAX_WORDS];
static int nwords;

/* Split a copy of @s; the words point into it for the whole run. */
static void split_into_words(const char *s)
{
	char *tok, *save = NULL, *copy = strdup(s);

	if (!copy) {
		perror("p2pctl");
		exit(2);
	}
	for (tok = strtok_r(copy, " \t\r\n;", &save); tok;
	     tok = strtok_r(NULL, " \t\r\n;", &save)) {
		if (nwords == MAX_WORDS) {
			fprintf(stderr, "p2pctl: more than %d words\n", MAX_WORDS);
			exit(2);
		}
		words[nwords++] = tok;
	}
}

static void read_file_words(const char *path)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "r") : stdin;
	char *buf = NULL;
	size_t cap = 0;

	if (!f) {
		perror(path);
		exit(2);
	}
	while (getline(&buf, &cap, f) >= 0) {
		char *hash = strchr(buf, '#');

		if (hash)
			*hash = 0;
		split_into_words(buf);
	}
	free(buf);
	if (f != stdin)
		fclose(f);
}

/* -i [NAME=]PATH: one more importer; names are letters, digits, '-', '_'. */
static int add_importer(char *spec)
{
	char *eq = strchr(spec, '=');
	struct importer *imp;
	int i;

	if (nimps == MAX_IMPS) {
		fprintf(stderr, "p2pctl: more than %d importers (-i)\n", MAX_IMPS);
		return -1;
	}
	imp = &imps[nimps];
	imp->fd = -1;
	imp->last_mr = 0;
	if (eq) {
		*eq = 0;
		imp->name = spec;
		imp->path = eq + 1;
		if (!*spec || strspn(spec, "abcdefghijklmnopqrstuvwxyz"
				     "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != strlen(spec)) {
			fprintf(stderr, "p2pctl: -i %s=%s: a bad importer name\n", spec, eq + 1);
			return -1;
		}
	} else {
		snprintf(imp_index_names[nimps], sizeof(imp_index_names[0]), "%d", nimps);
		imp->name = imp_index_names[nimps];
		imp->path = spec;
	}
	for (i = 0; i < nimps; i++)
		if (!strcmp(imps[i].name, imp->name)) {
			fprintf(stderr, "p2pctl: -i: importer name '%s' given twice\n", imp->name);
			return -1;
		}
	nimps++;
	return 0;
}

int main(int argc, char **argv)
{
	struct sigaction sa = { 0 };
	struct cmd c;
	int opt, i, n;

	while ((opt = getopt(argc, argv, "ekx:i:f:h")) != -1) {
		switch (opt) {
		case 'e':	/* the default; kept for old scripts */
			keep_going = false;
			break;
		case 'k':
			keep_going = true;
			break;
		case 'x':
			exp_path = optarg;
			break;
		case 'i':
			if (add_importer(optarg))
				return 2;
			break;
		case 'f':
			read_file_words(optarg);
			break;
		default:
			usage();
			return opt == 'h' ? 0 : 2;
		}
	}
	for (i = optind; i < argc; i++)
		split_into_words(argv[i]);
	if (!nwords) {
		usage();
		return 2;
	}
	/* Refuse, before running anything, what would be dropped silently. */
	for (i = 0, n = 0; i < nwords; i++) {
		n = strchr(words[i], '=') ? n + 1 : 0;
		if (n > MAX_ARGS) {
			fprintf(stderr, "p2pctl: more than %d arguments to one command at '%s'\n",
				MAX_ARGS, words[i]);
			return 2;
		}
	}

	sa.sa_handler = fault_handler;
	sa.sa_flags = SA_NODEFER;
	sigaction(SIGBUS, &sa, NULL);
	sigaction(SIGSEGV, &sa, NULL);

	for (i = 0; i < nwords;) {
		memset(&c, 0, sizeof(c));
		c.op = words[i++];
		step++;
		if (strchr(c.op, '=')) {
			jbegin("parse");
			jfail(EINVAL, "argument without a command");
			jstr("word", c.op);
			jend(&c);
			continue;
		}
		while (i < nwords && strchr(words[i], '=')) {
			char *eq = strchr(words[i], '=');

			*eq = 0;
			c.args[c.nargs].key = words[i];
			c.args[c.nargs].val = eq + 1;
			c.nargs++;
			i++;
		}
		run(&c);
	}
	return unexpected ? 1 : 0;
}
