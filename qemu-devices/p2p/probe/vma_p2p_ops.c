// SPDX-License-Identifier: GPL-2.0
/*
 * Compile probe, never linked into a module: the Makefile compiles this file
 * with the kernel's own flags to learn what the kernel under build offers,
 * instead of guessing from its version (the RFC is a patch series, so no
 * version has it):
 *
 *   -DP2P_PROBE_VMA_OPS      struct vm_operations_struct has the RFC's
 *                            p2p_map/p2p_unmap with the RFC's signatures
 *                            (RFC 3/5) -> P2P_HAVE_VMA_P2P_OPS
 *   -DP2P_PROBE_DEVICE_TEST  <linux/device.h> declares
 *                            bool device_test_p2p(struct device *,
 *                            struct device *) (RFC 2/5)
 *                            -> P2P_HAVE_DEVICE_TEST_P2P
 *
 * With neither defined the file must compile on every kernel: the Makefile
 * checks that first, so that flags that are wrong for some kernel fail the
 * build loudly instead of silently choosing the compat path.
 */
#include <linux/compiler.h>
#include <linux/device.h>
#include <linux/mm.h>
#include <linux/types.h>

#ifdef P2P_PROBE_VMA_OPS
static long probe_p2p_map(struct vm_area_struct *vma, struct device *device,
			  unsigned long start, unsigned long end,
			  dma_addr_t *pa, bool write)
{
	return 0;
}

static long probe_p2p_unmap(struct vm_area_struct *vma, struct device *device,
			    unsigned long start, unsigned long end,
			    dma_addr_t *pa)
{
	return 0;
}

static const struct vm_operations_struct probe_vm_ops __used = {
	.p2p_map = probe_p2p_map,
	.p2p_unmap = probe_p2p_unmap,
};
#endif

#ifdef P2P_PROBE_DEVICE_TEST
static bool (*const probe_device_test_p2p)(struct device *,
					   struct device *) __used =
	device_test_p2p;
#endif

static const int probe_baseline __used = 1;
