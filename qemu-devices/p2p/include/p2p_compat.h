/* SPDX-License-Identifier: GPL-2.0 */
/*
 * p2p_compat.h - the RFC's vma p2p_map/p2p_unmap, on kernels without them.
 *
 * The January 2019 RFC "mm/vma: add support for peer to peer to device vma"
 * adds two members to struct vm_operations_struct:
 *
 *   long (*p2p_map)(struct vm_area_struct *vma, struct device *device,
 *                   unsigned long start, unsigned long end,
 *                   dma_addr_t *pa, bool write);
 *   long (*p2p_unmap)(struct vm_area_struct *vma, struct device *device,
 *                     unsigned long start, unsigned long end,
 *                     dma_addr_t *pa);
 *
 * where @device is the importer, [@start, @end) a page-aligned range of @vma,
 * and @pa receives one bus address per page. No released kernel has them, so
 * p2p_exporter.ko exports functions with the same signatures that find the
 * exporter owning @vma (vma->vm_ops is the exporter's, else -EOPNOTSUPP).
 *
 * Importers call only the p2p_vma_*() wrappers below: this header is the one
 * place that chooses between the compat functions and, on a kernel patched
 * with the RFC, vma->vm_ops->p2p_map/p2p_unmap. The Makefile's compile probe
 * (probe/vma_p2p_ops.c) defines P2P_HAVE_VMA_P2P_OPS when struct
 * vm_operations_struct has the members, and P2P_HAVE_DEVICE_TEST_P2P when
 * <linux/device.h> declares the RFC's device_test_p2p(). Both modules report
 * the choice in the read-only parameter "path": "vm_ops" or "compat".
 *
 * On the vm_ops path, before asking the exporter the importer asks the
 * kernel whether the two devices may do P2P at all: device_test_p2p(importer,
 * exporting device) (RFC 2/5, on pci_test_p2p() of RFC 1/5); false refuses
 * the map with -EXDEV, and the exporter is never called. The RFC gives an
 * importer no way to name the device that exports a VMA, so the testbed's
 * exporter provides p2p_compat_vma_device(). As posted, pci_test_p2p()
 * always returned false: on that kernel every map is refused here.
 *
 * Contract (as the RFC states it, and as p2p_exporter implements it):
 * - returns 0 on success, -errno on failure;
 * - predictable: once p2p_map succeeded on a VMA, the same importer calling
 *   it again on the same still-valid VMA succeeds with the same addresses;
 * - not a pin: the exporter may zap the VMA at any time (eviction, move,
 *   hot-unplug). The importer learns of it through its mmu_interval_notifier
 *   covering [@start, @end), must stop DMA and call p2p_unmap with the same
 *   arguments; it may p2p_map again afterwards;
 * - every successful p2p_map is balanced by exactly one p2p_unmap, even after
 *   the exporting device is gone (then it only drops the record);
 * - p2p_map may sleep; callers hold mmap_read_lock() of vma->vm_mm, and must
 *   not hold locks that their invalidation callback takes.
 *
 * Errors: -EOPNOTSUPP not an exporter VMA, -EINVAL bad range, -EACCES write
 * on a read-only VMA, -ENODEV exporting device removed, -EXDEV the exporter's
 * P2P policy (or, on the vm_ops path, device_test_p2p()) refuses this
 * importer, -EPERM a P2P_MAP_PIN request refused, -EINTR killed while
 * waiting for an object move, -ENOMEM.
 */
#ifndef _P2P_COMPAT_H
#define _P2P_COMPAT_H

#include <linux/device.h>
#include <linux/mm.h>
#include <linux/types.h>

/*
 * Extension, not in the RFC: "pin forever". Jerome Glisse's answer in the RFC
 * thread: "If we ever want to support full pin then we might have to add a
 * flag so that GPU driver can refuse an importer that wants things pin
 * forever." The exporter refuses it with -EPERM unless allowed.
 */
#define P2P_MAP_PIN	(1U << 0)

long p2p_compat_map(struct vm_area_struct *vma, struct device *importer,
		    unsigned long start, unsigned long end, dma_addr_t *pa,
		    bool write);
long p2p_compat_map_flags(struct vm_area_struct *vma, struct device *importer,
			  unsigned long start, unsigned long end,
			  dma_addr_t *pa, bool write, unsigned int flags);
long p2p_compat_unmap(struct vm_area_struct *vma, struct device *importer,
		      unsigned long start, unsigned long end, dma_addr_t *pa);
bool p2p_compat_vma_is_exporter(struct vm_area_struct *vma);
/* The PCI device exporting @vma, referenced (put_device() it), or NULL. */
struct device *p2p_compat_vma_device(struct vm_area_struct *vma);

#ifdef P2P_HAVE_VMA_P2P_OPS
#define P2P_PATH	"vm_ops"
#else
#define P2P_PATH	"compat"
#endif

/* Each module says which path it was built for: parameters/path. */
#define P2P_PATH_PARAM()						\
	static char *p2p_path = P2P_PATH;				\
	module_param_named(path, p2p_path, charp, 0444);		\
	MODULE_PARM_DESC(path, "how importers reach p2p_map: vm_ops "	\
			 "(the kernel's vm_operations_struct, RFC 3/5) or " \
			 "compat (p2p_exporter's exported functions)")

/*
 * Shared timeline (debugfs p2p_exporter/events and the kernel log): one line
 * per event, stamped with ktime_get_real_ns() so that a test can order it
 * against the host's QMP events. Returns the stamp.
 */
__printf(3, 4)
u64 p2p_compat_event(const char *who, const char *dev, const char *fmt, ...);

#ifdef P2P_HAVE_VMA_P2P_OPS
/* May @importer do P2P with the device exporting @vma? The kernel decides. */
static inline bool p2p_vma_device_test(struct vm_area_struct *vma,
				       struct device *importer)
{
#ifdef P2P_HAVE_DEVICE_TEST_P2P
	struct device *exporter = p2p_compat_vma_device(vma);
	bool ok;

	if (!exporter)		/* gone: p2p_map itself answers -ENODEV */
		return true;
	ok = device_test_p2p(importer, exporter);
	if (!ok)
		p2p_compat_event(KBUILD_MODNAME, dev_name(importer),
				 "map refused by device_test_p2p exporter=%s",
				 dev_name(exporter));
	put_device(exporter);
	return ok;
#else
	return true;
#endif
}

static inline long p2p_vma_map(struct vm_area_struct *vma,
			       struct device *importer, unsigned long start,
			       unsigned long end, dma_addr_t *pa, bool write,
			       unsigned int flags)
{
	if (!vma->vm_ops || !vma->vm_ops->p2p_map)
		return -EOPNOTSUPP;
	if (!p2p_vma_device_test(vma, importer))
		return -EXDEV;
	/*
	 * The RFC's p2p_map has no way to ask for a pin (P2P_MAP_PIN is the
	 * testbed's extension): such a request goes to the exporter's
	 * compat entry point, which alone knows the flag.
	 */
	if (flags & P2P_MAP_PIN)
		return p2p_compat_map_flags(vma, importer, start, end, pa,
					    write, flags);
	return vma->vm_ops->p2p_map(vma, importer, start, end, pa, write);
}

static inline long p2p_vma_unmap(struct vm_area_struct *vma,
				 struct device *importer, unsigned long start,
				 unsigned long end, dma_addr_t *pa)
{
	if (!vma->vm_ops || !vma->vm_ops->p2p_unmap)
		return -EOPNOTSUPP;
	return vma->vm_ops->p2p_unmap(vma, importer, start, end, pa);
}
#else
static inline long p2p_vma_map(struct vm_area_struct *vma,
			       struct device *importer, unsigned long start,
			       unsigned long end, dma_addr_t *pa, bool write,
			       unsigned int flags)
{
	return p2p_compat_map_flags(vma, importer, start, end, pa, write,
				    flags);
}

static inline long p2p_vma_unmap(struct vm_area_struct *vma,
				 struct device *importer, unsigned long start,
				 unsigned long end, dma_addr_t *pa)
{
	return p2p_compat_unmap(vma, importer, start, end, pa);
}
#endif

#endif /* _P2P_COMPAT_H */
