// SPDX-License-Identifier: GPL-2.0
/*
 * execout: run the command of `testbed exec` and send its output to the host over a serial
 * port that the host only reads, then power the guest off.
 *
 *   execout /dev/ttyS1 /etc/testbed/exec
 *
 * The file holds the command; it runs as `sh -c COMMAND` in /root with stdin from /dev/null
 * (what dropbear would give it). Its stdout and stderr are read through two pipes and sent
 * as frames, so that the host can tell them apart and knows the exit status (the format is
 * parsed on the host by testbed/guest/execout.py, which bounds every field):
 *
 *   "TBEXEC1\n"                     once, first: where the frames begin
 *   TYPE LEN_HI LEN_LO PAYLOAD      TYPE 'S' started (LEN 0), 'O' stdout, 'E' stderr
 *                                   (1..4096 bytes), 'X' exit (2 bytes: 'e' and the exit
 *                                   code, or 's' and the signal that killed the shell)
 *
 * The port is put in raw mode first (no "\n" -> "\r\n"). The exit frame follows as soon as
 * the shell has exited and the pipes hold nothing more (a background child that keeps the
 * pipes open does not hold the command up, as with ssh -T). "testbed-guest: command started"
 * and "... command exited" also go to /dev/kmsg, so the console log shows where the command
 * ran. Anything going wrong with the port itself is reported on /dev/kmsg as "testbed-guest:
 * exec: ...", which the host looks for. The guest is powered off at the end in every case.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define MAX_PAYLOAD 4096
#define MAX_COMMAND (1 << 20)

static int port = -1;

static void kmsg(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (fd >= 0) {
		if (write(fd, buf, strlen(buf)) < 0)
			fputs(buf, stderr);
		close(fd);
	} else {
		fputs(buf, stderr);
	}
}

static __attribute__((noreturn)) void power_off(void)
{
	if (port >= 0)
		tcdrain(port);
	sync();
	reboot(RB_POWER_OFF);
	_exit(1); /* only without CAP_SYS_BOOT: init then carries on */
}

static __attribute__((noreturn)) void fail(const char *what)
{
	kmsg("testbed-guest: exec: %s: %s\n", what, strerror(errno));
	power_off();
}

static void send_all(const void *data, size_t len)
{
	const char *p = data;

	while (len > 0) {
		ssize_t n = write(port, p, len);

		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			fail("writing the output port");
		}
		p += n;
		len -= (size_t)n;
	}
}

static void frame(char type, const void *payload, size_t len)
{
	unsigned char head[3] = { (unsigned char)type, (unsigned char)(len >> 8),
				  (unsigned char)len };

	send_all(head, sizeof(head));
	if (len)
		send_all(payload, len);
}

static char *read_command(const char *path)
{
	struct stat st;
	char *cmd;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0)
		fail(path);
	if (st.st_size > MAX_COMMAND) {
		errno = E2BIG;
		fail(path);
	}
	cmd = calloc(1, (size_t)st.st_size + 1);
	if (!cmd)
		fail("calloc");
	n = read(fd, cmd, (size_t)st.st_size);
	if (n != st.st_size)
		fail(path);
	close(fd);
	return cmd;
}

/* Forward what one pipe has; returns 0 at end of file. */
static int forward(int fd, char type)
{
	char buf[MAX_PAYLOAD];
	ssize_t n = read(fd, buf, sizeof(buf));

	if (n < 0)
		return errno == EINTR || errno == EAGAIN ? 1 : 0;
	if (n > 0)
		frame(type, buf, (size_t)n);
	return n > 0;
}

int main(int argc, char **argv)
{
	int out[2], err[2], status = 0, done = 0;
	struct pollfd fds[2];
	struct termios tio;
	char *cmd;
	pid_t pid;

	if (argc != 3) {
		fprintf(stderr, "usage: execout PORT COMMAND-FILE\n");
		return 126;
	}
	cmd = read_command(argv[2]);
	port = open(argv[1], O_WRONLY | O_NOCTTY | O_CLOEXEC);
	if (port < 0)
		fail(argv[1]);
	if (tcgetattr(port, &tio) < 0)
		fail(argv[1]);
	cfmakeraw(&tio);
	if (tcsetattr(port, TCSANOW, &tio) < 0)
		fail(argv[1]);
	send_all("TBEXEC1\n", 8);
	if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0)
		fail("pipe");

	kmsg("testbed-guest: command started\n");
	frame('S', NULL, 0);
	pid = fork();
	if (pid < 0)
		fail("fork");
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);

		if (null < 0 || dup2(null, 0) < 0 || dup2(out[1], 1) < 0 || dup2(err[1], 2) < 0)
			_exit(127);
		if (chdir("/root") < 0)
			_exit(127);
		setenv("HOME", "/root", 1);
		setenv("USER", "root", 1);
		setenv("LOGNAME", "root", 1);
		setenv("SHELL", "/bin/sh", 1);
		signal(SIGPIPE, SIG_DFL);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	fds[0] = (struct pollfd){ .fd = out[0], .events = POLLIN };
	fds[1] = (struct pollfd){ .fd = err[0], .events = POLLIN };
	while (fds[0].fd >= 0 || fds[1].fd >= 0) {
		int ready;

		if (!done && waitpid(pid, &status, WNOHANG) == pid)
			done = 1;
		/* once the shell is gone, only drain what is already in the pipes */
		ready = poll(fds, 2, done ? 0 : 100);
		if (ready < 0 && errno != EINTR)
			fail("poll");
		if (ready <= 0) {
			if (done)
				break;
			continue;
		}
		for (int i = 0; i < 2; i++) {
			if (fds[i].fd >= 0 && fds[i].revents &&
			    !forward(fds[i].fd, i == 0 ? 'O' : 'E')) {
				close(fds[i].fd);
				fds[i].fd = -1;
			}
		}
	}
	if (!done && waitpid(pid, &status, 0) < 0)
		fail("waitpid");
	{
		unsigned char exit_payload[2];

		if (WIFSIGNALED(status)) {
			exit_payload[0] = 's';
			exit_payload[1] = (unsigned char)WTERMSIG(status);
		} else {
			exit_payload[0] = 'e';
			exit_payload[1] = (unsigned char)WEXITSTATUS(status);
		}
		frame('X', exit_payload, sizeof(exit_payload));
		kmsg("testbed-guest: command exited (%c %d)\n", exit_payload[0], exit_payload[1]);
	}
	power_off();
}
