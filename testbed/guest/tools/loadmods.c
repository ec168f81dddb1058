// SPDX-License-Identifier: GPL-2.0
/*
 * loadmods: load the kernel modules a list names, in order, from one process.
 *
 *   loadmods /etc/testbed/modules.net
 *
 * Each line is "PATH [PARAMS...]". The guest's start-up loads about a dozen modules; under TCG
 * a fork and exec of insmod for each costs more than loading the module, so this calls
 * finit_module(2) itself (compressed modules, which finit_module cannot take without
 * MODULE_INIT_COMPRESSED_FILE, go through busybox insmod). A module that fails is reported on
 * /dev/kmsg as "testbed-guest: insmod PATH failed: REASON", the line the host looks for, and
 * the rest are still loaded. Exit status: the number of failures (at most 125); 126 on usage
 * or an unreadable list.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *path, const char *why)
{
	FILE *kmsg = fopen("/dev/kmsg", "w");

	fprintf(kmsg ? kmsg : stderr, "testbed-guest: insmod %s failed: %s\n", path, why);
	if (kmsg)
		fclose(kmsg);
}

static int compressed(const char *path)
{
	static const char *const suffixes[] = { ".ko.xz", ".ko.zst", ".ko.gz" };
	size_t len = strlen(path);

	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		size_t n = strlen(suffixes[i]);

		if (len > n && strcmp(path + len - n, suffixes[i]) == 0)
			return 1;
	}
	return 0;
}

static int insmod(char *path, char *params)
{
	int status;
	pid_t pid = fork();

	if (pid == 0) {
		execl("/bin/busybox", "insmod", path, *params ? params : (char *)NULL,
		      (char *)NULL);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0)
		return -1;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static int load(char *path, char *params)
{
	int fd, rc;

	if (compressed(path)) {
		if (insmod(path, params) != 0) {
			report(path, "busybox insmod failed");
			return -1;
		}
		return 0;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		report(path, strerror(errno));
		return -1;
	}
	rc = (int)syscall(SYS_finit_module, fd, params, 0);
	if (rc != 0)
		report(path, strerror(errno));
	close(fd);
	return rc;
}

int main(int argc, char **argv)
{
	char line[4096];
	int failed = 0;
	FILE *list;

	if (argc != 2) {
		fprintf(stderr, "usage: loadmods LIST\n");
		return 126;
	}
	list = fopen(argv[1], "r");
	if (!list) {
		perror(argv[1]);
		return 126;
	}
	while (fgets(line, sizeof(line), list)) {
		char *path = line + strspn(line, " \t");
		char *params;

		path[strcspn(path, "\n")] = '\0';
		if (!*path)
			continue;
		params = path + strcspn(path, " \t");
		if (*params) {
			*params++ = '\0';
			params += strspn(params, " \t");
		}
		if (load(path, params) != 0)
			failed++;
	}
	fclose(list);
	return failed > 125 ? 125 : failed;
}
