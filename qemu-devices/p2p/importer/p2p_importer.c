// SPDX-License-Identifier: GPL-2.0
/*
 * p2p_importer - RDMA NIC stand-in for the P2P testbed.
 *
 * Binds QEMU's edu (1234:11e8; start QEMU with dma_mask=0xffffffffffffffff)
 * and uses its DMA engine to reach a peer's BAR. User space registers a
 * memory region (MR) over an exporter mapping: the importer asks the exporter
 * for bus addresses with p2p_vma_map() (p2p_compat.h) and covers the range
 * with an mmu_interval_notifier, like an ODP MR. When the exporter zaps the
 * VMA (eviction, hot-unplug) or the process unmaps it or exits, the notifier
 * waits for the MR's in-flight DMA, then calls p2p_vma_unmap() and marks the
 * MR invalid; the next DMA maps it again (the RFC's "predictable" p2p_map),
 * or fails with -ENODEV once the exporter is gone.
 *
 * edu: registers 0x80 src, 0x88 dst, 0x90 count, 0x98 cmd (bit 0 run, bit 1
 * direction 1 = edu buffer -> bus address, bit 2 raise DMA interrupt 0x100);
 * 0x24 interrupt status, 0x64 interrupt acknowledge. The 4 KiB buffer sits
 * at device address 0x40000 and is not visible through BAR0, so a write to
 * the peer is kernel buffer -> edu -> peer and a read peer -> edu -> kernel
 * buffer, in pieces of at most EDU_PIECE bytes. Each transfer fires from a
 * timer ~100 ms (virtual clock) after it is started.
 *
 * Locking: imp->lock guards the MR table and the dead flag; mr->lock guards
 * an MR's mapping and is held for the whole of a DMA on it, so the notifier
 * (which takes mr->lock) naturally waits for in-flight DMA; imp->dma_lock
 * serializes use of the edu engine and buffer. Order: mmap_lock -> imp->lock
 * -> mr->lock -> imp->dma_lock -> exporter locks. No mmap_lock is taken
 * under mr->lock.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
/* A contract breach seen by this driver; see P2P_WARN_PREFIX in p2p_exporter.c. */
#define P2P_WARN_PREFIX	"P2P-WARN: "

#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/dma-mapping.h>
#include <linux/idr.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/io-64-nonatomic-lo-hi.h>
#include <linux/kref.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/sched/mm.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/workqueue.h>
#include <linux/xarray.h>

#include <p2p_compat.h>
#include <p2p_testbed.h>

#define EDU_ID			0x00
#define EDU_IRQ_STATUS		0x24
#define EDU_IRQ_ACK		0x64
#define EDU_DMA_SRC		0x80
#define EDU_DMA_DST		0x88
#define EDU_DMA_CNT		0x90
#define EDU_DMA_CMD		0x98
#define EDU_CMD_RUN		0x1
#define EDU_CMD_TO_PCI		0x2	/* edu buffer -> bus address */
#define EDU_CMD_IRQ		0x4
#define EDU_IRQ_DMA		0x100
#define EDU_BUF			0x40000
#define EDU_BUF_SIZE		4096
/*
 * QEMU 7.2's edu_check_range() calls hw_error(), killing QEMU, for any
 * transfer that ends at the buffer's last byte (it tests end < 0x41000) and
 * for a zero count; upstream later made it a log message. Stage data in
 * pieces that stay in the first half of the buffer.
 */
#define EDU_PIECE		2048

static bool lazy_unmap;
module_param(lazy_unmap, bool, 0644);
MODULE_PARM_DESC(lazy_unmap,
		 "Misbehave for tests: on an exporter zap (MMU_NOTIFY_CLEAR) stop DMA "
		 "but keep the p2p mapping until the next DMA, DEREG_MR or close");

static unsigned int dma_timeout_ms = 5000;
module_param(dma_timeout_ms, uint, 0644);
MODULE_PARM_DESC(dma_timeout_ms, "Give up on one edu transfer after this long");

static bool use_irq = true;
module_param(use_irq, bool, 0444);
MODULE_PARM_DESC(use_irq, "Wait for edu's DMA interrupt (else poll the run bit)");

/* Counters: same order as struct p2p_importer_stats. */
enum imp_stat {
	IMP_MRS, IMP_MAPS, IMP_UNMAPS, IMP_INVALIDATIONS, IMP_REMAPS,
	IMP_DMA_OK, IMP_DMA_FAILED, IMP_REFUSED, IMP_MAP_ERRORS, IMP_NR_STATS
};

static const char * const imp_stat_names[IMP_NR_STATS] = {
	"mrs", "maps", "unmaps", "invalidations", "remaps",
	"dma_ok", "dma_failed", "refused", "map_errors",
};

static atomic64_t imp_totals[IMP_NR_STATS];
static atomic_t imp_devices = ATOMIC_INIT(0);

struct p2p_importer {
	struct kref ref;
	struct pci_dev *pdev;
	char bdf[16];
	char name[24];			/* p2p-importerN */
	int index;
	struct miscdevice misc;
	void __iomem *regs;
	int irq;
	struct mutex lock;
	struct mutex dma_lock;
	struct completion dma_done;
	void *buf;			/* EDU_BUF_SIZE coherent bounce buffer */
	dma_addr_t buf_dma;
	bool dead;			/* under lock: removed */
	bool hw_gone;			/* under dma_lock: engine unusable */
	struct xarray mrs;		/* id -> struct p2p_mr */
	struct dentry *dbg;
	atomic64_t stats[IMP_NR_STATS];
};

#define MR_NOTIFIER	0		/* bit in p2p_mr.state */

struct p2p_mr {
	struct kref ref;
	struct p2p_importer *imp;
	struct file *owner;
	u32 id;
	u32 flags;			/* P2P_MR_* */
	unsigned long start, len, npages;
	struct mm_struct *mm;		/* mmgrab()ed: outlives the notifier */
	struct mmu_interval_notifier notifier;
	unsigned long state;
	struct list_head reap;
	struct mutex lock;
	bool mapped;			/* p2p_map held */
	bool valid;			/* mapped and not invalidated */
	bool dead;			/* torn down */
	struct vm_area_struct *vma;	/* as mapped; passed to p2p_unmap */
	dma_addr_t *pa;
	u32 maps, invalidations;
};

struct imp_file {
	struct p2p_importer *imp;
	struct work_struct work;
	bool async_busy;		/* under imp->lock */
	struct completion async_done;
	struct p2p_mr *async_mr;
	struct p2p_dma async_req;
	int async_result;
	void *async_buf;
};

static DEFINE_IDA(imp_ida);
static struct dentry *imp_dbg_root;

static void stat_add(struct p2p_importer *imp, enum imp_stat id, s64 n)
{
	atomic64_add(n, &imp->stats[id]);
	atomic64_add(n, &imp_totals[id]);
}

#define imp_event(imp, fmt, ...) \
	p2p_compat_event(KBUILD_MODNAME, (imp)->bdf, fmt, ##__VA_ARGS__)

/* ---- lifetime ---------------------------------------------------------- */

static void imp_release(struct kref *ref)
{
	struct p2p_importer *imp = container_of(ref, struct p2p_importer, ref);

	xa_destroy(&imp->mrs);
	if (imp->index >= 0)
		ida_free(&imp_ida, imp->index);
	pci_dev_put(imp->pdev);
	kfree(imp);
}

static void imp_put(struct p2p_importer *imp)
{
	kref_put(&imp->ref, imp_release);
}

static void mr_release(struct kref *ref)
{
	struct p2p_mr *mr = container_of(ref, struct p2p_mr, ref);

	WARN_ON(test_bit(MR_NOTIFIER, &mr->state) || mr->mapped);
	stat_add(mr->imp, IMP_MRS, -1);
	imp_put(mr->imp);
	mmdrop(mr->mm);
	kvfree(mr->pa);
	kfree(mr);
}

static void mr_put(struct p2p_mr *mr)
{
	kref_put(&mr->ref, mr_release);
}

/* ---- mapping ------------------------------------------------------------ */

/* mr->lock held, mr->mapped. */
static void mr_unmap_locked(struct p2p_mr *mr)
{
	struct p2p_importer *imp = mr->imp;
	long ret;

	ret = p2p_vma_unmap(mr->vma, &imp->pdev->dev, mr->start,
			    mr->start + mr->len, mr->pa);
	if (ret)
		pr_warn_ratelimited(P2P_WARN_PREFIX "%s: p2p_unmap of MR %u failed: %ld\n",
				    imp->bdf, mr->id, ret);
	mr->mapped = false;
	mr->valid = false;
	mr->vma = NULL;
	stat_add(imp, IMP_UNMAPS, 1);
}

/*
 * Map (or map again) the whole MR. The mapping is published under mr->lock
 * only if no invalidation ran since mmu_interval_read_begin(); otherwise it
 * is given back and the map retried.
 */
static int mr_map(struct p2p_mr *mr, bool remap)
{
	struct p2p_importer *imp = mr->imp;
	/*
	 * Not mr->notifier.mm: mmu_interval_notifier_remove() drops the
	 * notifier's reference, and a DMA may get here after a teardown.
	 */
	struct mm_struct *mm = mr->mm;
	unsigned long end = mr->start + mr->len;
	unsigned int pflags = (mr->flags & P2P_MR_PIN) ? P2P_MAP_PIN : 0;
	bool write = mr->flags & P2P_MR_WRITE;
	struct vm_area_struct *vma;
	unsigned long seq;
	dma_addr_t *pa;
	int tries, ret = -EAGAIN;
	bool done;

	pa = kvmalloc_array(mr->npages, sizeof(*pa), GFP_KERNEL);
	if (!pa)
		return -ENOMEM;
	if (!mmget_not_zero(mm)) {
		kvfree(pa);
		return -EFAULT;
	}
	for (tries = 0; tries < 16; tries++) {
		seq = mmu_interval_read_begin(&mr->notifier);
		mmap_read_lock(mm);
		vma = vma_lookup(mm, mr->start);
		if (!vma || end > vma->vm_end) {
			ret = -EFAULT;
			goto out_unlock;
		}
		mutex_lock(&mr->lock);
		if (mr->dead || mr->valid) {
			ret = mr->dead ? -ENODEV : 0;
			mutex_unlock(&mr->lock);
			goto out_unlock;
		}
		if (mr->mapped)		/* kept by lazy_unmap: give it back */
			mr_unmap_locked(mr);
		mutex_unlock(&mr->lock);

		ret = p2p_vma_map(vma, &imp->pdev->dev, mr->start, end, pa,
				  write, pflags);
		if (ret) {
			if (ret == -EPERM && pflags)
				stat_add(imp, IMP_REFUSED, 1);
			else
				stat_add(imp, IMP_MAP_ERRORS, 1);
			goto out_unlock;
		}
		stat_add(imp, IMP_MAPS, 1);

		mutex_lock(&mr->lock);
		done = !mr->dead && !mr->valid &&
		       !mmu_interval_read_retry(&mr->notifier, seq);
		if (done) {
			memcpy(mr->pa, pa, mr->npages * sizeof(*pa));
			mr->vma = vma;
			mr->mapped = true;
			mr->valid = true;
			mr->maps++;
			if (remap)
				stat_add(imp, IMP_REMAPS, 1);
		}
		mutex_unlock(&mr->lock);
		if (done) {
			ret = 0;
			goto out_unlock;
		}
		/* Raced with an invalidation (or teardown): give it back. */
		p2p_vma_unmap(vma, &imp->pdev->dev, mr->start, end, pa);
		stat_add(imp, IMP_UNMAPS, 1);
		mmap_read_unlock(mm);
		ret = -EAGAIN;
	}
	goto out;

out_unlock:
	mmap_read_unlock(mm);
out:
	mmput(mm);
	kvfree(pa);
	return ret;
}

/* Returns with mr->lock held and the MR valid, or an error. */
static int mr_lock_valid(struct p2p_mr *mr, bool *remapped)
{
	int tries, ret;

	for (tries = 0; tries < 8; tries++) {
		mutex_lock(&mr->lock);
		if (mr->dead) {
			mutex_unlock(&mr->lock);
			return -ENODEV;
		}
		if (mr->valid)
			return 0;
		mutex_unlock(&mr->lock);
		ret = mr_map(mr, true);
		if (ret)
			return ret;
		*remapped = true;
	}
	return -EAGAIN;
}

static const char *mn_event_name(enum mmu_notifier_event event)
{
	switch (event) {
	case MMU_NOTIFY_UNMAP: return "unmap";
	case MMU_NOTIFY_CLEAR: return "clear";
	case MMU_NOTIFY_PROTECTION_VMA: return "protection_vma";
	case MMU_NOTIFY_PROTECTION_PAGE: return "protection_page";
	case MMU_NOTIFY_SOFT_DIRTY: return "soft_dirty";
	case MMU_NOTIFY_RELEASE: return "release";
	case MMU_NOTIFY_MIGRATE: return "migrate";
	default: return "other";
	}
}

static bool mr_invalidate(struct mmu_interval_notifier *mni,
			  const struct mmu_notifier_range *range,
			  unsigned long cur_seq)
{
	struct p2p_mr *mr = container_of(mni, struct p2p_mr, notifier);
	struct p2p_importer *imp = mr->imp;
	u64 t0 = ktime_get_real_ns();
	bool keep;

	if (mmu_notifier_range_blockable(range))
		mutex_lock(&mr->lock);	/* waits for this MR's in-flight DMA */
	else if (!mutex_trylock(&mr->lock))
		return false;
	if (!mmu_notifier_range_blockable(range) && mr->mapped) {
		mutex_unlock(&mr->lock);	/* p2p_unmap may sleep */
		return false;
	}
	mmu_interval_set_seq(mni, cur_seq);
	if (mr->mapped) {
		keep = lazy_unmap && range->event == MMU_NOTIFY_CLEAR;
		mr->valid = false;
		mr->invalidations++;
		stat_add(imp, IMP_INVALIDATIONS, 1);
		imp_event(imp, "invalidate mr=%u event=%s waited_ns=%llu%s",
			  mr->id, mn_event_name(range->event),
			  ktime_get_real_ns() - t0,
			  keep ? " lazy: mapping kept" : "");
		if (!keep)
			mr_unmap_locked(mr);
	}
	mutex_unlock(&mr->lock);
	return true;
}

static const struct mmu_interval_notifier_ops mr_notifier_ops = {
	.invalidate = mr_invalidate,
};

/* Stop using the MR for good: unmap, drop the notifier. Not under mr->lock. */
static void mr_teardown(struct p2p_mr *mr)
{
	mutex_lock(&mr->lock);
	mr->dead = true;
	if (mr->mapped)
		mr_unmap_locked(mr);
	mr->valid = false;
	mutex_unlock(&mr->lock);
	if (test_and_clear_bit(MR_NOTIFIER, &mr->state))
		mmu_interval_notifier_remove(&mr->notifier);
}

static int imp_reg_mr(struct imp_file *f, struct file *file,
		      struct p2p_reg_mr *req)
{
	struct p2p_importer *imp = f->imp;
	struct p2p_mr *mr;
	u64 *bus = NULL, first;
	u32 n, i;
	int ret;

	/*
	 * An MR lies in one exporter VMA, hence in one object: bound len
	 * before sizing arrays by it (kvmalloc() WARNs above INT_MAX).
	 */
	if (!req->len || req->len > P2P_OBJ_MAX_SIZE ||
	    (req->addr | req->len) & ~PAGE_MASK ||
	    req->addr + req->len < req->addr ||
	    (req->flags & ~(P2P_MR_WRITE | P2P_MR_PIN)))
		return -EINVAL;
	mr = kzalloc(sizeof(*mr), GFP_KERNEL);
	if (!mr)
		return -ENOMEM;
	kref_init(&mr->ref);
	mutex_init(&mr->lock);
	mr->imp = imp;
	kref_get(&imp->ref);
	mr->mm = current->mm;
	mmgrab(mr->mm);
	stat_add(imp, IMP_MRS, 1);
	mr->flags = req->flags;
	mr->start = req->addr;
	mr->len = req->len;
	mr->npages = req->len >> PAGE_SHIFT;
	n = min_t(u64, req->bus_len, mr->npages);
	mr->pa = kvcalloc(mr->npages, sizeof(*mr->pa), GFP_KERNEL);
	if (req->bus_addrs && n)
		bus = kvmalloc_array(n, sizeof(*bus), GFP_KERNEL);
	if (!mr->pa || (req->bus_addrs && n && !bus)) {
		ret = -ENOMEM;
		goto err_put;
	}
	if (READ_ONCE(imp->dead)) {
		ret = -ENODEV;
		goto err_put;
	}
	ret = mmu_interval_notifier_insert(&mr->notifier, current->mm,
					   mr->start, mr->len,
					   &mr_notifier_ops);
	if (ret)
		goto err_put;
	set_bit(MR_NOTIFIER, &mr->state);

	ret = mr_map(mr, false);
	if (ret)
		goto err_teardown;
	mutex_lock(&mr->lock);
	first = mr->pa[0];
	for (i = 0; bus && i < n; i++)
		bus[i] = mr->pa[i];
	mutex_unlock(&mr->lock);
	if (bus && copy_to_user(u64_to_user_ptr(req->bus_addrs), bus,
				n * sizeof(*bus))) {
		ret = -EFAULT;
		goto err_teardown;
	}

	mutex_lock(&imp->lock);
	if (imp->dead)
		ret = -ENODEV;
	else
		ret = xa_alloc(&imp->mrs, &mr->id, mr, xa_limit_31b, GFP_KERNEL);
	if (!ret) {
		mr->owner = file;
		req->mr = mr->id;
		req->npages = mr->npages;
	}
	mutex_unlock(&imp->lock);
	if (ret)
		goto err_teardown;

	/* Published: another thread may DEREG_MR and free @mr from here on. */
	imp_event(imp, "reg mr=%u va=0x%llx pages=%u bus=0x%llx%s", req->mr,
		  req->addr, req->npages, first,
		  (req->flags & P2P_MR_PIN) ? " pinned" : "");
	kvfree(bus);
	return 0;

err_teardown:
	mr_teardown(mr);
err_put:
	kvfree(bus);
	mr_put(mr);
	return ret;
}

static int imp_dereg_mr(struct imp_file *f, struct file *file, u32 id)
{
	struct p2p_importer *imp = f->imp;
	struct p2p_mr *mr;

	mutex_lock(&imp->lock);
	mr = xa_load(&imp->mrs, id);
	if (!mr || mr->owner != file) {
		mutex_unlock(&imp->lock);
		return -ENOENT;
	}
	xa_erase(&imp->mrs, id);
	mutex_unlock(&imp->lock);
	mr_teardown(mr);
	imp_event(imp, "dereg mr=%u", id);
	mr_put(mr);
	return 0;
}

static struct p2p_mr *mr_lookup(struct p2p_importer *imp, struct file *file,
				u32 id)
{
	struct p2p_mr *mr;

	mutex_lock(&imp->lock);
	mr = xa_load(&imp->mrs, id);
	if (mr && mr->owner == file)
		kref_get(&mr->ref);
	else
		mr = NULL;
	mutex_unlock(&imp->lock);
	return mr;
}

static int imp_mr_info(struct p2p_importer *imp, struct file *file,
		       struct p2p_mr_info *info)
{
	struct p2p_mr *mr = mr_lookup(imp, file, info->mr);
	u64 *tmp = NULL;
	u32 n, i;
	int ret = 0;

	if (!mr)
		return -ENOENT;
	n = min_t(u64, info->bus_len, mr->npages);
	if (info->bus_addrs && n) {
		tmp = kvmalloc_array(n, sizeof(u64), GFP_KERNEL);
		if (!tmp) {
			mr_put(mr);
			return -ENOMEM;
		}
	}
	mutex_lock(&mr->lock);
	info->flags = mr->flags;
	info->addr = mr->start;
	info->len = mr->len;
	info->npages = mr->npages;
	info->valid = mr->valid;
	info->mapped = mr->mapped;
	info->maps = mr->maps;
	info->invalidations = mr->invalidations;
	for (i = 0; tmp && i < n; i++)
		tmp[i] = mr->pa[i];
	mutex_unlock(&mr->lock);
	if (tmp && copy_to_user(u64_to_user_ptr(info->bus_addrs), tmp,
				n * sizeof(u64)))
		ret = -EFAULT;
	kvfree(tmp);
	mr_put(mr);
	return ret;
}

/* ---- edu DMA ------------------------------------------------------------ */

static irqreturn_t imp_irq(int irq, void *data)
{
	struct p2p_importer *imp = data;
	u32 status = readl(imp->regs + EDU_IRQ_STATUS);

	if (!status || status == ~0U)
		return IRQ_NONE;
	writel(status, imp->regs + EDU_IRQ_ACK);
	if (status & EDU_IRQ_DMA)
		complete(&imp->dma_done);
	return IRQ_HANDLED;
}

/* One edu transfer of @cnt bytes; imp->dma_lock held. */
static int edu_dma(struct p2p_importer *imp, u64 src, u64 dst, u32 cnt,
		   bool to_pci)
{
	u64 cmd = EDU_CMD_RUN | (to_pci ? EDU_CMD_TO_PCI : 0);
	u64 edu_addr = to_pci ? src : dst;
	unsigned long deadline;

	lockdep_assert_held(&imp->dma_lock);
	/* Never hand QEMU 7.2 a range that makes it hw_error() (see EDU_PIECE). */
	if (WARN_ON_ONCE(!cnt || edu_addr < EDU_BUF ||
			 edu_addr + cnt >= EDU_BUF + EDU_BUF_SIZE))
		return -EINVAL;
	if (imp->irq > 0)
		cmd |= EDU_CMD_IRQ;
	reinit_completion(&imp->dma_done);
	writeq(src, imp->regs + EDU_DMA_SRC);
	writeq(dst, imp->regs + EDU_DMA_DST);
	writeq(cnt, imp->regs + EDU_DMA_CNT);
	writeq(cmd, imp->regs + EDU_DMA_CMD);
	if (imp->irq > 0 &&
	    wait_for_completion_timeout(&imp->dma_done,
					msecs_to_jiffies(dma_timeout_ms)))
		return 0;
	/* No interrupt (or polling mode): watch the run bit, bounded. */
	deadline = jiffies + msecs_to_jiffies(imp->irq > 0 ? 10 : dma_timeout_ms);
	do {
		u64 now = readq(imp->regs + EDU_DMA_CMD);

		if (now == ~0ULL)
			return -ENODEV;	/* device gone */
		if (!(now & EDU_CMD_RUN))
			return 0;
		usleep_range(1000, 2000);
	} while (time_before(jiffies, deadline));
	dev_warn_ratelimited(&imp->pdev->dev, "edu DMA did not complete in %u ms\n",
			     dma_timeout_ms);
	return -ETIMEDOUT;
}

/*
 * A DMA between @kbuf (@req->len bytes) and the MR at @req->offset, in
 * pieces that neither cross a peer page nor exceed EDU_PIECE; each piece is
 * two edu transfers (kernel buffer <-> edu buffer <-> peer). Holds mr->lock
 * throughout, so an invalidation waits for the DMA to finish.
 */
static int imp_do_dma(struct p2p_importer *imp, struct p2p_mr *mr,
		      struct p2p_dma *req, void *kbuf)
{
	bool to_peer = req->dir == P2P_DMA_TO_PEER;
	bool remapped = false;
	u64 t0 = ktime_get_ns(), t1, done, n;
	int ret;

	req->segments = 0;
	req->peer_ns = 0;
	ret = mr_lock_valid(mr, &remapped);
	if (ret)
		goto out;
	mutex_lock(&imp->dma_lock);
	if (imp->hw_gone) {
		ret = -ENODEV;
		goto unlock;
	}
	req->bus_addr = mr->pa[req->offset >> PAGE_SHIFT] +
			(req->offset & ~PAGE_MASK);
	if (to_peer)
		memcpy(imp->buf, kbuf, req->len);
	for (done = 0; done < req->len; done += n) {
		u64 off = req->offset + done;
		u64 bus = mr->pa[off >> PAGE_SHIFT] + (off & ~PAGE_MASK);
		u64 ram = imp->buf_dma + done;

		n = min3(req->len - done, (u64)EDU_PIECE,
			 (u64)(PAGE_SIZE - (off & ~PAGE_MASK)));
		if (to_peer) {
			ret = edu_dma(imp, ram, EDU_BUF, n, false);
			if (ret)
				goto unlock;
			t1 = ktime_get_ns();
			ret = edu_dma(imp, EDU_BUF, bus, n, true);
		} else {
			t1 = ktime_get_ns();
			ret = edu_dma(imp, bus, EDU_BUF, n, false);
		}
		req->peer_ns += ktime_get_ns() - t1;
		if (ret)
			goto unlock;
		if (!to_peer) {
			ret = edu_dma(imp, EDU_BUF, ram, n, true);
			if (ret)
				goto unlock;
		}
		req->segments++;
	}
	if (!to_peer)
		memcpy(kbuf, imp->buf, req->len);
unlock:
	mutex_unlock(&imp->dma_lock);
	mutex_unlock(&mr->lock);
out:
	req->remapped = remapped;
	req->ns = ktime_get_ns() - t0;
	stat_add(imp, ret ? IMP_DMA_FAILED : IMP_DMA_OK, 1);
	if (ret || remapped)
		imp_event(imp, "dma mr=%u %s len=%llu bus=0x%llx%s err=%d",
			  mr->id, to_peer ? "to_peer" : "from_peer", req->len,
			  req->bus_addr, remapped ? " remapped" : "", ret);
	return ret;
}

static int dma_check(struct p2p_mr *mr, const struct p2p_dma *req)
{
	if (req->dir != P2P_DMA_TO_PEER && req->dir != P2P_DMA_FROM_PEER)
		return -EINVAL;
	if (!req->len || req->len > P2P_DMA_MAX || req->offset >= mr->len ||
	    req->len > mr->len - req->offset)
		return -EINVAL;
	if (req->flags & ~(P2P_DMA_PATTERN | P2P_DMA_ASYNC | P2P_DMA_SEQ))
		return -EINVAL;
	if (req->dir == P2P_DMA_FROM_PEER && !req->buf &&
	    !(req->flags & P2P_DMA_ASYNC))
		return -EINVAL;
	return 0;
}

static int dma_fill(const struct p2p_dma *req, void *kbuf)
{
	u64 i;

	if (req->dir != P2P_DMA_TO_PEER)
		return 0;
	if (req->flags & P2P_DMA_SEQ) {
		for (i = 0; i < req->len; i++)
			((u8 *)kbuf)[i] = (u8)(req->pattern + i);
		return 0;
	}
	if ((req->flags & P2P_DMA_PATTERN) || !req->buf) {
		memset(kbuf, (u8)req->pattern, req->len);
		return 0;
	}
	if (copy_from_user(kbuf, u64_to_user_ptr(req->buf), req->len))
		return -EFAULT;
	return 0;
}

static void imp_async_work(struct work_struct *work)
{
	struct imp_file *f = container_of(work, struct imp_file, work);

	f->async_result = imp_do_dma(f->imp, f->async_mr, &f->async_req,
				     f->async_buf);
	mr_put(f->async_mr);
	f->async_mr = NULL;
	complete(&f->async_done);
}

static int imp_dma(struct imp_file *f, struct file *file, struct p2p_dma *req)
{
	struct p2p_importer *imp = f->imp;
	struct p2p_mr *mr;
	void *kbuf;
	int ret;

	mr = mr_lookup(imp, file, req->mr);
	if (!mr) {
		stat_add(imp, IMP_DMA_FAILED, 1);
		return READ_ONCE(imp->dead) ? -ENODEV : -ENOENT;
	}
	ret = dma_check(mr, req);
	if (ret)
		goto out_put;

	if (req->flags & P2P_DMA_ASYNC) {
		mutex_lock(&imp->lock);
		if (f->async_busy)
			ret = -EBUSY;
		else
			f->async_busy = true;
		mutex_unlock(&imp->lock);
		if (ret)
			goto out_put;
		ret = dma_fill(req, f->async_buf);
		if (ret) {
			WRITE_ONCE(f->async_busy, false);
			goto out_put;
		}
		f->async_req = *req;
		f->async_mr = mr;	/* the work drops this reference */
		reinit_completion(&f->async_done);
		queue_work(system_unbound_wq, &f->work);
		return 0;
	}

	kbuf = kmalloc(P2P_DMA_MAX, GFP_KERNEL);
	if (!kbuf) {
		ret = -ENOMEM;
		goto out_put;
	}
	ret = dma_fill(req, kbuf);
	if (!ret)
		ret = imp_do_dma(imp, mr, req, kbuf);
	if (!ret && req->dir == P2P_DMA_FROM_PEER &&
	    copy_to_user(u64_to_user_ptr(req->buf), kbuf, req->len))
		ret = -EFAULT;
	kfree(kbuf);
out_put:
	mr_put(mr);
	return ret;
}

static int imp_dma_wait(struct imp_file *f, struct p2p_dma_wait *w)
{
	int ret;

	if (!READ_ONCE(f->async_busy))
		return -ENOENT;
	ret = wait_for_completion_killable(&f->async_done);
	if (ret)
		return ret;
	w->result = f->async_result;
	w->dma = f->async_req;
	if (!w->result && w->dma.dir == P2P_DMA_FROM_PEER && w->dma.buf &&
	    copy_to_user(u64_to_user_ptr(w->dma.buf), f->async_buf, w->dma.len))
		w->result = -EFAULT;
	WRITE_ONCE(f->async_busy, false);
	return 0;
}

/* ---- character device ---------------------------------------------------- */

static int imp_open(struct inode *inode, struct file *file)
{
	struct miscdevice *misc = file->private_data;
	struct p2p_importer *imp = container_of(misc, struct p2p_importer, misc);
	struct imp_file *f;

	f = kzalloc(sizeof(*f), GFP_KERNEL);
	if (!f)
		return -ENOMEM;
	f->async_buf = kmalloc(P2P_DMA_MAX, GFP_KERNEL);
	if (!f->async_buf) {
		kfree(f);
		return -ENOMEM;
	}
	INIT_WORK(&f->work, imp_async_work);
	init_completion(&f->async_done);
	/* misc_open() holds misc_mtx: remove cannot free @imp under us. */
	kref_get(&imp->ref);
	f->imp = imp;
	file->private_data = f;
	return 0;
}

static int imp_file_release(struct inode *inode, struct file *file)
{
	struct imp_file *f = file->private_data;
	struct p2p_importer *imp = f->imp;
	struct p2p_mr *mr, *tmp;
	unsigned long id;
	LIST_HEAD(reap);

	flush_work(&f->work);
	mutex_lock(&imp->lock);
	xa_for_each(&imp->mrs, id, mr) {
		if (mr->owner != file)
			continue;
		xa_erase(&imp->mrs, id);
		list_add(&mr->reap, &reap);
	}
	mutex_unlock(&imp->lock);
	list_for_each_entry_safe(mr, tmp, &reap, reap) {
		mr_teardown(mr);
		mr_put(mr);
	}
	kfree(f->async_buf);
	kfree(f);
	imp_put(imp);
	return 0;
}

static long imp_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct imp_file *f = file->private_data;
	struct p2p_importer *imp = f->imp;
	void __user *uarg = (void __user *)arg;
	union {
		struct p2p_reg_mr reg;
		struct p2p_mr_info info;
		struct p2p_dma dma;
		struct p2p_dma_wait wait;
		struct p2p_importer_info dev;
		u32 id;
	} u;
	long ret;
	u64 *out;
	int i;

	if (_IOC_SIZE(cmd) > sizeof(u))
		return -ENOTTY;
	if ((_IOC_DIR(cmd) & _IOC_WRITE) &&
	    copy_from_user(&u, uarg, _IOC_SIZE(cmd)))
		return -EFAULT;

	switch (cmd) {
	case P2P_IMP_REG_MR:
		ret = imp_reg_mr(f, file, &u.reg);
		break;
	case P2P_IMP_DEREG_MR:
		ret = imp_dereg_mr(f, file, u.id);
		break;
	case P2P_IMP_MR_INFO:
		ret = imp_mr_info(imp, file, &u.info);
		break;
	case P2P_IMP_DMA:
		ret = imp_dma(f, file, &u.dma);
		break;
	case P2P_IMP_DMA_WAIT:
		memset(&u.wait, 0, sizeof(u.wait));
		ret = imp_dma_wait(f, &u.wait);
		break;
	case P2P_IMP_INFO:
		BUILD_BUG_ON(sizeof(u.dev.stats) != IMP_NR_STATS * sizeof(u64));
		memset(&u.dev, 0, sizeof(u.dev));
		u.dev.dead = READ_ONCE(imp->dead);
		strscpy(u.dev.bdf, imp->bdf, sizeof(u.dev.bdf));
		out = (u64 *)&u.dev.stats;
		for (i = 0; i < IMP_NR_STATS; i++)
			out[i] = atomic64_read(&imp->stats[i]);
		ret = 0;
		break;
	default:
		return -ENOTTY;
	}
	if (!ret && (_IOC_DIR(cmd) & _IOC_READ) &&
	    copy_to_user(uarg, &u, _IOC_SIZE(cmd)))
		return -EFAULT;
	return ret;
}

static const struct file_operations imp_fops = {
	.owner = THIS_MODULE,
	.open = imp_open,
	.release = imp_file_release,
	.unlocked_ioctl = imp_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

/* ---- debugfs --------------------------------------------------------------- */

static void stats_print(struct seq_file *m, atomic64_t *stats)
{
	int i;

	for (i = 0; i < IMP_NR_STATS; i++)
		seq_printf(m, "%s %lld\n", imp_stat_names[i],
			   atomic64_read(&stats[i]));
}

static int dev_stats_show(struct seq_file *m, void *unused)
{
	struct p2p_importer *imp = m->private;

	seq_printf(m, "dead %d\n", READ_ONCE(imp->dead));
	stats_print(m, imp->stats);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(dev_stats);

static int total_stats_show(struct seq_file *m, void *unused)
{
	seq_printf(m, "devices %d\n", atomic_read(&imp_devices));
	stats_print(m, imp_totals);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(total_stats);

static int mrs_show(struct seq_file *m, void *unused)
{
	struct p2p_importer *imp = m->private;
	struct p2p_mr *mr;
	unsigned long id;

	mutex_lock(&imp->lock);
	xa_for_each(&imp->mrs, id, mr)
		seq_printf(m, "mr %u va 0x%lx len %lu flags 0x%x bus 0x%llx valid %d mapped %d maps %u invalidations %u%s\n",
			   mr->id, mr->start, mr->len, mr->flags,
			   (u64)READ_ONCE(mr->pa[0]), READ_ONCE(mr->valid),
			   READ_ONCE(mr->mapped), READ_ONCE(mr->maps),
			   READ_ONCE(mr->invalidations),
			   READ_ONCE(mr->dead) ? " dead" : "");
	mutex_unlock(&imp->lock);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(mrs);

/* ---- PCI driver -------------------------------------------------------------- */

static int imp_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct p2p_importer *imp;
	int ret, i;

	imp = kzalloc(sizeof(*imp), GFP_KERNEL);
	if (!imp)
		return -ENOMEM;
	kref_init(&imp->ref);
	mutex_init(&imp->lock);
	mutex_init(&imp->dma_lock);
	init_completion(&imp->dma_done);
	xa_init_flags(&imp->mrs, XA_FLAGS_ALLOC1);
	for (i = 0; i < IMP_NR_STATS; i++)
		atomic64_set(&imp->stats[i], 0);
	imp->pdev = pci_dev_get(pdev);
	imp->index = -1;
	strscpy(imp->bdf, pci_name(pdev), sizeof(imp->bdf));

	ret = pci_enable_device(pdev);
	if (ret)
		goto err_put;
	ret = pci_request_regions(pdev, KBUILD_MODNAME);
	if (ret)
		goto err_disable;
	imp->regs = pci_iomap(pdev, 0, 0);
	if (!imp->regs) {
		ret = -ENOMEM;
		goto err_release;
	}
	ret = dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(64));
	if (ret)
		goto err_unmap;
	pci_set_master(pdev);
	imp->buf = dma_alloc_coherent(&pdev->dev, EDU_BUF_SIZE, &imp->buf_dma,
				      GFP_KERNEL);
	if (!imp->buf) {
		ret = -ENOMEM;
		goto err_master;
	}
	writel(~0U, imp->regs + EDU_IRQ_ACK);
	if (use_irq) {
		ret = pci_alloc_irq_vectors(pdev, 1, 1, PCI_IRQ_ALL_TYPES);
		if (ret < 0)
			goto err_free_buf;
		imp->irq = pci_irq_vector(pdev, 0);
		ret = request_irq(imp->irq, imp_irq, IRQF_SHARED,
				  KBUILD_MODNAME, imp);
		if (ret)
			goto err_vectors;
	}
	imp->index = ida_alloc(&imp_ida, GFP_KERNEL);
	if (imp->index < 0) {
		ret = imp->index;
		goto err_irq;
	}
	snprintf(imp->name, sizeof(imp->name), "p2p-importer%d", imp->index);

	imp->dbg = debugfs_create_dir(imp->bdf, imp_dbg_root);
	debugfs_create_file("stats", 0444, imp->dbg, imp, &dev_stats_fops);
	debugfs_create_file("mrs", 0444, imp->dbg, imp, &mrs_fops);

	imp->misc.minor = MISC_DYNAMIC_MINOR;
	imp->misc.name = imp->name;
	imp->misc.fops = &imp_fops;
	imp->misc.parent = &pdev->dev;
	imp->misc.mode = 0666;
	pci_set_drvdata(pdev, imp);
	ret = misc_register(&imp->misc);
	if (ret)
		goto err_debugfs;
	atomic_inc(&imp_devices);
	imp_event(imp, "probe dev=/dev/%s id=0x%08x irq=%d%s dma_buf=0x%llx",
		  imp->name, readl(imp->regs + EDU_ID), imp->irq,
		  pdev->msi_enabled ? " msi" : "", (u64)imp->buf_dma);
	return 0;

err_debugfs:
	debugfs_remove_recursive(imp->dbg);
err_irq:
	if (imp->irq > 0)
		free_irq(imp->irq, imp);
err_vectors:
	if (use_irq)
		pci_free_irq_vectors(pdev);
err_free_buf:
	dma_free_coherent(&pdev->dev, EDU_BUF_SIZE, imp->buf, imp->buf_dma);
err_master:
	pci_clear_master(pdev);
err_unmap:
	pci_iounmap(pdev, imp->regs);
err_release:
	pci_release_regions(pdev);
err_disable:
	pci_disable_device(pdev);
err_put:
	imp_put(imp);
	return ret;
}

/*
 * Hot-unplug of the importer: refuse new work, wait for the DMA in flight,
 * give every p2p mapping back and drop the notifiers, then let the device go.
 * Open files keep @imp (not the device) alive; their MRs are dead.
 */
static void imp_remove(struct pci_dev *pdev)
{
	struct p2p_importer *imp = pci_get_drvdata(pdev);
	struct p2p_mr *mr;
	unsigned long id, n = 0;
	u64 t0, t1;

	t0 = imp_event(imp, "remove begin");
	misc_deregister(&imp->misc);
	mutex_lock(&imp->lock);
	imp->dead = true;
	mutex_unlock(&imp->lock);

	mutex_lock(&imp->dma_lock);	/* waits for the transfer in flight */
	imp->hw_gone = true;
	mutex_unlock(&imp->dma_lock);
	t1 = imp_event(imp, "remove dma stopped waited_ns=%llu",
		       ktime_get_real_ns() - t0);

	mutex_lock(&imp->lock);
	xa_for_each(&imp->mrs, id, mr) {
		mr_teardown(mr);
		n++;
	}
	mutex_unlock(&imp->lock);
	imp_event(imp, "remove mrs unmapped mrs=%lu ns=%llu", n,
		  ktime_get_real_ns() - t1);

	debugfs_remove_recursive(imp->dbg);
	imp->dbg = NULL;
	if (imp->irq > 0) {
		free_irq(imp->irq, imp);
		pci_free_irq_vectors(pdev);
	}
	dma_free_coherent(&pdev->dev, EDU_BUF_SIZE, imp->buf, imp->buf_dma);
	imp->buf = NULL;
	pci_clear_master(pdev);
	pci_iounmap(pdev, imp->regs);
	imp->regs = NULL;
	pci_release_regions(pdev);
	pci_disable_device(pdev);
	atomic_dec(&imp_devices);
	imp_event(imp, "remove done total_ns=%llu", ktime_get_real_ns() - t0);
	imp_put(imp);
}

static const struct pci_device_id imp_ids[] = {
	{ PCI_DEVICE(0x1234, 0x11e8) },	/* QEMU edu */
	{ }
};
MODULE_DEVICE_TABLE(pci, imp_ids);

static struct pci_driver imp_driver = {
	.name = KBUILD_MODNAME,
	.id_table = imp_ids,
	.probe = imp_probe,
	.remove = imp_remove,
};

static int __init imp_init(void)
{
	int ret;

	imp_dbg_root = debugfs_create_dir(KBUILD_MODNAME, NULL);
	debugfs_create_file("stats", 0444, imp_dbg_root, NULL, &total_stats_fops);
	ret = pci_register_driver(&imp_driver);
	if (ret)
		debugfs_remove_recursive(imp_dbg_root);
	return ret;
}

static void __exit imp_exit(void)
{
	pci_unregister_driver(&imp_driver);
	debugfs_remove_recursive(imp_dbg_root);
}

module_init(imp_init);
module_exit(imp_exit);

MODULE_DESCRIPTION("P2P testbed importer (RDMA NIC stand-in) on QEMU edu");
MODULE_AUTHOR("p2p-testbed");
MODULE_LICENSE("GPL");
