/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * p2p_testbed.h - ioctl interface of the P2P testbed's guest drivers.
 *
 * p2p_exporter (GPU stand-in, ivshmem-plain 1af4:1110, BAR2 = "VRAM"):
 *   /dev/p2p-exporterN; objects are carved out of BAR2 and mapped with
 *   mmap(fd, offset = P2P_OBJ_MMAP_OFFSET(handle) + byte offset in object).
 *
 * p2p_importer (RDMA NIC stand-in, edu 1234:11e8):
 *   /dev/p2p-importerN; memory regions (MRs) over an exporter mapping, and
 *   DMA through edu's engine to or from the peer BAR.
 *
 * Shared by the kernel modules and by the static user-space helper p2pctl.
 */
#ifndef _UAPI_P2P_TESTBED_H
#define _UAPI_P2P_TESTBED_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define P2P_EXP_IOC_MAGIC	'P'
#define P2P_IMP_IOC_MAGIC	'Q'

/* An object's mmap offset: its handle in bits 32..62, the byte offset below. */
#define P2P_OBJ_MMAP_SHIFT	32
#define P2P_OBJ_MMAP_OFFSET(handle) ((__u64)(handle) << P2P_OBJ_MMAP_SHIFT)
#define P2P_OBJ_MAX_SIZE	(1ULL << P2P_OBJ_MMAP_SHIFT)
#define P2P_OBJ_MAX_HANDLE	0xffffU

/* ---- exporter --------------------------------------------------------- */

/* Object flags (p2p_create_object.flags, p2p_object_info.flags). */
#define P2P_OBJ_NO_PIN		(1U << 0) /* refuse "pin forever" maps of it */

struct p2p_create_object {
	__u64 size;		/* in: bytes, rounded up to pages */
	__u32 flags;		/* in: P2P_OBJ_* */
	__u32 handle;		/* out */
	__u64 offset;		/* out: byte offset in BAR2 */
	__u64 mmap_offset;	/* out: pass to mmap() */
	__u64 bus_addr;		/* out: PCI bus address of the first byte */
};

struct p2p_object_info {
	__u32 handle;		/* in */
	__u32 flags;		/* out: P2P_OBJ_* */
	__u64 size;		/* out: bytes (page multiple) */
	__u64 offset;		/* out: current byte offset in BAR2 */
	__u64 mmap_offset;	/* out */
	__u64 bus_addr;		/* out: current bus address of the first byte */
	__u32 importers;	/* out: live p2p_map records */
	__u32 generation;	/* out: evictions so far */
};

struct p2p_evict {
	__u32 handle;		/* in */
	__u32 importers;	/* out: p2p_map records when the eviction began */
	__u64 old_offset;	/* out */
	__u64 new_offset;	/* out */
	__u64 zap_ns;		/* out: time to zap PTEs (importer notifiers run here) */
	__u64 wait_ns;		/* out: time then spent waiting for p2p_unmap */
	__u32 timed_out;	/* out: 1 if importers did not unmap in time */
	__u32 pad;
};

/* Counters; the same names appear in debugfs "stats" files. */
struct p2p_exporter_stats {
	__u64 objects;		/* live objects */
	__u64 objects_created;
	__u64 maps;		/* successful p2p_map calls */
	__u64 unmaps;		/* p2p_unmap calls that found their record */
	__u64 imports;		/* live p2p_map records */
	__u64 evictions;
	__u64 evict_timeouts;
	__u64 evict_busy;	/* evictions refused: pinned importer */
	__u64 refused;		/* pinned maps refused (-EPERM) */
	__u64 p2p_denied;	/* maps refused by exporter_allow_p2p() (-EXDEV) */
	__u64 faults;		/* CPU page faults served */
	__u64 unplug_waits;	/* removes that found importers and waited */
	__u64 unplug_timeouts;	/* removes that gave up waiting */
	__u64 leaked_pages;	/* BAR pages quarantined after a wait timed out */
};

struct p2p_exporter_info {
	__u64 bar_size;		/* out: BAR2 bytes */
	__u64 bar_bus;		/* out: pci_bus_address(pdev, 2) */
	__u64 bar_phys;		/* out: CPU physical address of BAR2 */
	__u32 dead;		/* out: 1 once the PCI device was removed */
	__u32 pad;
	char bdf[16];		/* out: PCI name, e.g. "0000:01:00.0" */
	struct p2p_exporter_stats stats; /* out */
};

#define P2P_EXP_CREATE_OBJECT	_IOWR(P2P_EXP_IOC_MAGIC, 0x01, struct p2p_create_object)
#define P2P_EXP_DESTROY_OBJECT	_IOW(P2P_EXP_IOC_MAGIC, 0x02, __u32)
#define P2P_EXP_OBJECT_INFO	_IOWR(P2P_EXP_IOC_MAGIC, 0x03, struct p2p_object_info)
#define P2P_EXP_EVICT		_IOWR(P2P_EXP_IOC_MAGIC, 0x04, struct p2p_evict)
#define P2P_EXP_INFO		_IOR(P2P_EXP_IOC_MAGIC, 0x05, struct p2p_exporter_info)

/* ---- importer --------------------------------------------------------- */

/* MR flags (p2p_reg_mr.flags). */
#define P2P_MR_WRITE		(1U << 0) /* ask for a writable mapping */
#define P2P_MR_PIN		(1U << 1) /* ask the exporter to pin it forever */

struct p2p_reg_mr {
	__u64 addr;		/* in: user VA, page aligned, in one exporter VMA */
	__u64 len;		/* in: bytes, page multiple */
	__u32 flags;		/* in: P2P_MR_* */
	__u32 mr;		/* out: MR id (> 0) */
	__u64 bus_addrs;	/* in: user pointer to __u64[bus_len], or 0 */
	__u32 bus_len;		/* in: entries at bus_addrs */
	__u32 npages;		/* out */
};

struct p2p_mr_info {
	__u32 mr;		/* in */
	__u32 flags;		/* out: P2P_MR_* */
	__u64 addr;		/* out */
	__u64 len;		/* out */
	__u64 bus_addrs;	/* in: user pointer to __u64[bus_len], or 0 */
	__u32 bus_len;		/* in */
	__u32 npages;		/* out */
	__u32 valid;		/* out: mapping usable for DMA */
	__u32 mapped;		/* out: p2p_map held (valid, or lazily kept) */
	__u32 maps;		/* out: p2p_map calls made for this MR */
	__u32 invalidations;	/* out: invalidations seen by this MR */
};

#define P2P_DMA_TO_PEER		0 /* write into the exporter's memory */
#define P2P_DMA_FROM_PEER	1 /* read from the exporter's memory */

#define P2P_DMA_PATTERN		(1U << 0) /* to peer: fill with .pattern, ignore .buf */
#define P2P_DMA_ASYNC		(1U << 1) /* start and return; P2P_IMP_DMA_WAIT later */
#define P2P_DMA_SEQ		(1U << 2) /* to peer: byte i = .pattern + i (mod 256) */

#define P2P_DMA_MAX		4096	  /* edu's buffer */

struct p2p_dma {
	__u32 mr;		/* in */
	__u32 dir;		/* in: P2P_DMA_TO_PEER or P2P_DMA_FROM_PEER */
	__u64 offset;		/* in: byte offset in the MR */
	__u64 len;		/* in: 1..P2P_DMA_MAX */
	__u64 buf;		/* in: user buffer (source or destination), or 0 */
	__u32 pattern;		/* in: low byte used with P2P_DMA_PATTERN/SEQ */
	__u32 flags;		/* in: P2P_DMA_* */
	__u64 bus_addr;		/* out: peer bus address of the first byte */
	__u32 remapped;		/* out: 1 if the MR was re-mapped first */
	__u32 segments;		/* out: peer-side edu transfers */
	__u64 ns;		/* out: whole ioctl, including remap */
	__u64 peer_ns;		/* out: the peer-side transfers only */
};

struct p2p_dma_wait {
	__s32 result;		/* out: 0 or -errno of the async DMA */
	__u32 pad;
	struct p2p_dma dma;	/* out: the finished request */
};

struct p2p_importer_stats {
	__u64 mrs;		/* live MRs */
	__u64 maps;		/* successful p2p_map calls */
	__u64 unmaps;		/* p2p_unmap calls */
	__u64 invalidations;	/* notifier calls that invalidated a mapping */
	__u64 remaps;		/* maps made again after an invalidation */
	__u64 dma_ok;
	__u64 dma_failed;
	__u64 refused;		/* maps refused by the exporter (-EPERM pin) */
	__u64 map_errors;	/* other p2p_map failures */
};

struct p2p_importer_info {
	__u32 dead;		/* out: 1 once the PCI device was removed */
	__u32 pad;
	char bdf[16];		/* out */
	struct p2p_importer_stats stats; /* out */
};

#define P2P_IMP_REG_MR		_IOWR(P2P_IMP_IOC_MAGIC, 0x01, struct p2p_reg_mr)
#define P2P_IMP_DEREG_MR	_IOW(P2P_IMP_IOC_MAGIC, 0x02, __u32)
#define P2P_IMP_MR_INFO		_IOWR(P2P_IMP_IOC_MAGIC, 0x03, struct p2p_mr_info)
#define P2P_IMP_DMA		_IOWR(P2P_IMP_IOC_MAGIC, 0x04, struct p2p_dma)
#define P2P_IMP_DMA_WAIT	_IOR(P2P_IMP_IOC_MAGIC, 0x05, struct p2p_dma_wait)
#define P2P_IMP_INFO		_IOR(P2P_IMP_IOC_MAGIC, 0x06, struct p2p_importer_info)

#endif /* _UAPI_P2P_TESTBED_H */
