// SPDX-License-Identifier: GPL-2.0
/*
 * barcat: read or write a PCI BAR through its sysfs resource file, which only supports mmap.
 *
 *   barcat read  /sys/bus/pci/devices/0000:01:00.0/resource2 OFFSET LENGTH > bytes
 *   barcat write /sys/bus/pci/devices/0000:01:00.0/resource2 OFFSET < bytes
 *
 * OFFSET and LENGTH are decimal or 0x-hex. Exit status: 0 ok, 1 usage, 2 I/O or mapping error.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static int fail(const char *what, const char *path)
{
	fprintf(stderr, "barcat: %s %s: %s\n", what, path, strerror(errno));
	return 2;
}

int main(int argc, char **argv)
{
	int writing, fd;
	unsigned long long offset, length, page, start, span, done = 0;
	struct stat st;
	unsigned char *map;

	if (argc < 4 || (strcmp(argv[1], "read") && strcmp(argv[1], "write")) ||
	    (!strcmp(argv[1], "read") && argc != 5)) {
		fprintf(stderr, "usage: barcat read FILE OFFSET LENGTH | barcat write FILE OFFSET\n");
		return 1;
	}
	writing = !strcmp(argv[1], "write");
	offset = strtoull(argv[3], NULL, 0);
	fd = open(argv[2], writing ? O_RDWR | O_SYNC : O_RDONLY | O_SYNC);
	if (fd < 0)
		return fail("open", argv[2]);
	if (fstat(fd, &st) < 0)
		return fail("stat", argv[2]);
	length = writing ? (unsigned long long)st.st_size - offset : strtoull(argv[4], NULL, 0);
	if (offset + length > (unsigned long long)st.st_size) {
		fprintf(stderr, "barcat: range 0x%llx+0x%llx is beyond the BAR's 0x%llx bytes\n",
			offset, length, (unsigned long long)st.st_size);
		return 1;
	}
	page = (unsigned long long)sysconf(_SC_PAGESIZE);
	start = offset & ~(page - 1);
	span = offset - start + length;
	if (span == 0)
		return 0;
	map = mmap(NULL, span, writing ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, start);
	if (map == MAP_FAILED)
		return fail("mmap", argv[2]);
	map += offset - start;
	if (writing) {
		ssize_t n;

		while (done < length && (n = read(0, map + done, length - done)) > 0)
			done += n;
	} else {
		ssize_t n;

		while (done < length && (n = write(1, map + done, length - done)) > 0)
			done += n;
		if (done < length)
			return fail("write", "stdout");
	}
	return 0;
}
