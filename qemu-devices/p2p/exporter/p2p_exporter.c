// SPDX-License-Identifier: GPL-2.0
/*
 * p2p_exporter - GPU stand-in for the P2P testbed.
 *
 * Binds QEMU's ivshmem-plain (1af4:1110) and treats BAR2, a host file, as
 * VRAM: user space creates objects carved out of BAR2 and mmaps them; the
 * mapping is filled page by page from the fault handler (vmf_insert_pfn), so
 * that a zap (unmap_mapping_range) followed by a fault lands on wherever the
 * object lives now.
 *
 * Importers map such a VMA for DMA through p2p_compat_map() (see
 * p2p_compat.h, the stand-in for the RFC's vm_operations p2p_map/p2p_unmap).
 * Invalidation is the RFC's: the exporter zaps the VMAs, which runs the
 * importers' mmu notifiers, which stop DMA and call p2p_compat_unmap(). The
 * exporter then waits, bounded, until no p2p_map record is left before it
 * reuses the old range (eviction) or releases the BAR (remove).
 *
 * Locking: exp->lock (mutex) guards objects, the BAR allocator and the
 * dead/moving flags; it is never held while zapping, because the zap runs
 * importer notifiers that call p2p_compat_unmap(). exp->imports_lock
 * (spinlock, inside exp->lock) guards the p2p_map records and their counts,
 * and changes to exp->obj_list; p2p_compat_unmap() takes only it, so that
 * no lock taken from an mmu notifier is held across an allocation (the
 * fault handler and object creation allocate under exp->lock).
 * exp->evict_lock serializes evictions against each other and against
 * remove. Lock order: mmap_lock -> importer locks -> exp_list_lock ->
 * exp->imports_lock, and exp->lock -> exp->imports_lock.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
/*
 * A breach of the p2p_map/p2p_unmap contract seen by this driver: one
 * kernel line "p2p_exporter: P2P-WARN: ...", which the testbed's console
 * check fails the running test on (testbed/guest/console.py).
 */
#define P2P_WARN_PREFIX	"P2P-WARN: "
#define p2p_warn(fmt, ...) pr_warn(P2P_WARN_PREFIX fmt, ##__VA_ARGS__)
#define p2p_warn_ratelimited(fmt, ...) \
	pr_warn_ratelimited(P2P_WARN_PREFIX fmt, ##__VA_ARGS__)

#include <linux/bitmap.h>
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/idr.h>
#include <linux/io.h>
#include <linux/kref.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mount.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/pci-p2pdma.h>
#include <linux/pseudo_fs.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/timekeeping.h>
#include <linux/uaccess.h>
#include <linux/version.h>
#include <linux/wait.h>
#include <linux/xarray.h>

#include <p2p_compat.h>
#include <p2p_testbed.h>

#define EXP_BAR			2
#define OBJ_PGOFF_SHIFT		(P2P_OBJ_MMAP_SHIFT - PAGE_SHIFT)
#define OBJ_PGOFF_MASK		((1UL << OBJ_PGOFF_SHIFT) - 1)

static bool refuse_pin = true;
module_param(refuse_pin, bool, 0644);
MODULE_PARM_DESC(refuse_pin, "Refuse every P2P_MAP_PIN request with -EPERM (default Y)");

static bool allow_p2p = true;
module_param(allow_p2p, bool, 0644);
MODULE_PARM_DESC(allow_p2p, "P2P policy: N refuses every importer with -EXDEV (default Y)");

static char *deny_importer;
module_param(deny_importer, charp, 0644);
MODULE_PARM_DESC(deny_importer, "P2P policy: refuse the importer with this device name");

#if IS_ENABLED(CONFIG_PCI_P2PDMA)
static bool use_p2pdma_distance = true;
module_param(use_p2pdma_distance, bool, 0644);
MODULE_PARM_DESC(use_p2pdma_distance, "P2P policy: also require pci_p2pdma_distance() >= 0");
#endif

static unsigned int unplug_wait_ms = 5000;
module_param(unplug_wait_ms, uint, 0644);
MODULE_PARM_DESC(unplug_wait_ms, "On remove, wait this long for importers to p2p_unmap");

static unsigned int evict_wait_ms = 2000;
module_param(evict_wait_ms, uint, 0644);
MODULE_PARM_DESC(evict_wait_ms, "On evict, wait this long for importers to p2p_unmap");

/* Counters: same order as struct p2p_exporter_stats. */
enum exp_stat {
	EXP_OBJECTS, EXP_OBJECTS_CREATED, EXP_MAPS, EXP_UNMAPS, EXP_IMPORTS,
	EXP_EVICTIONS, EXP_EVICT_TIMEOUTS, EXP_EVICT_BUSY, EXP_REFUSED,
	EXP_P2P_DENIED, EXP_FAULTS, EXP_UNPLUG_WAITS, EXP_UNPLUG_TIMEOUTS,
	EXP_LEAKED_PAGES, EXP_NR_STATS
};

static const char * const exp_stat_names[EXP_NR_STATS] = {
	"objects", "objects_created", "maps", "unmaps", "imports",
	"evictions", "evict_timeouts", "evict_busy", "refused",
	"p2p_denied", "faults", "unplug_waits", "unplug_timeouts",
	"leaked_pages",
};

static atomic64_t exp_totals[EXP_NR_STATS];
static atomic_t exp_devices = ATOMIC_INIT(0);
/* get_device() references on importers held by p2p_map records (debugfs "live"). */
static atomic_long_t exp_importer_refs = ATOMIC_LONG_INIT(0);

struct p2p_exporter {
	struct kref ref;
	struct list_head node;		/* exp_list, until freed */
	struct pci_dev *pdev;
	char bdf[16];
	char name[24];			/* p2p-exporterN */
	int index;
	struct miscdevice misc;
	bool misc_registered;
	struct inode *inode;		/* i_mapping shared by every open file */
	void __iomem *bar;
	phys_addr_t bar_phys;
	pci_bus_addr_t bar_bus;
	resource_size_t bar_size;
	unsigned long bar_pages;
	unsigned long *bitmap;		/* BAR2 pages in use */
	struct mutex lock;
	struct mutex evict_lock;
	spinlock_t imports_lock;	/* p2p_map records, obj_list changes */
	wait_queue_head_t wq;		/* moving cleared, records dropped, dead */
	struct xarray objects;		/* handle -> object, while it has a handle */
	struct list_head obj_list;	/* every live object */
	bool dead;
	unsigned long nr_imports;	/* under imports_lock */
	struct dentry *dbg;
	atomic64_t stats[EXP_NR_STATS];
};

struct p2p_obj {
	struct kref ref;
	struct p2p_exporter *exp;
	struct list_head node;		/* exp->obj_list */
	struct file *owner;		/* creating file while it has a handle */
	u32 handle;
	u32 flags;
	unsigned long npages;
	u64 offset;			/* bytes into BAR2 */
	bool moving;
	u32 generation;
	unsigned long nr_imports;	/* under exp->imports_lock */
	struct list_head imports;	/* struct p2p_import, same lock */
	struct list_head reap;
};

/* One successful p2p_map: who mapped what. */
struct p2p_import {
	struct list_head node;
	struct device *dev;
	unsigned long start, end;
	dma_addr_t first;
	bool write, pinned;
	u64 t_ns;
};

static DEFINE_IDA(exp_ida);
static LIST_HEAD(exp_list);		/* every p2p_exporter, dead ones too */
static DEFINE_MUTEX(exp_list_lock);	/* before any exp->lock */
static struct dentry *exp_dbg_root;
static const struct vm_operations_struct exp_vm_ops;

static void stat_add(struct p2p_exporter *exp, enum exp_stat id, s64 n)
{
	atomic64_add(n, &exp->stats[id]);
	atomic64_add(n, &exp_totals[id]);
}

/* ---- shared event timeline ---------------------------------------------- */

#define P2P_EVENTS	512

struct p2p_event {
	u64 t_ns;
	char text[120];
};

static struct p2p_event p2p_events[P2P_EVENTS];
static unsigned int p2p_event_next;
static unsigned int p2p_event_count;
static DEFINE_SPINLOCK(p2p_event_lock);

u64 p2p_compat_event(const char *who, const char *dev, const char *fmt, ...)
{
	struct p2p_event *e;
	unsigned long flags;
	char msg[96];
	va_list args;
	u64 t;

	va_start(args, fmt);
	vscnprintf(msg, sizeof(msg), fmt, args);
	va_end(args);
	t = ktime_get_real_ns();

	spin_lock_irqsave(&p2p_event_lock, flags);
	e = &p2p_events[p2p_event_next];
	e->t_ns = t;
	scnprintf(e->text, sizeof(e->text), "%s %s %s", who, dev, msg);
	p2p_event_next = (p2p_event_next + 1) % P2P_EVENTS;
	if (p2p_event_count < P2P_EVENTS)
		p2p_event_count++;
	spin_unlock_irqrestore(&p2p_event_lock, flags);

	printk(KERN_INFO "%s %s: %s t_ns=%llu\n", who, dev, msg, t);
	return t;
}
EXPORT_SYMBOL_GPL(p2p_compat_event);

#define exp_event(exp, fmt, ...) \
	p2p_compat_event(KBUILD_MODNAME, (exp)->bdf, fmt, ##__VA_ARGS__)

static int events_show(struct seq_file *m, void *unused)
{
	unsigned int i, idx;

	spin_lock_irq(&p2p_event_lock);
	idx = (p2p_event_next + P2P_EVENTS - p2p_event_count) % P2P_EVENTS;
	for (i = 0; i < p2p_event_count; i++) {
		seq_printf(m, "%llu %s\n", p2p_events[idx].t_ns,
			   p2p_events[idx].text);
		idx = (idx + 1) % P2P_EVENTS;
	}
	spin_unlock_irq(&p2p_event_lock);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(events);

/* ---- an anonymous inode: one address_space for every open file ---------- */

#define P2P_FS_MAGIC	0x70327065

static int p2p_fs_init_fs_context(struct fs_context *fc)
{
	return init_pseudo(fc, P2P_FS_MAGIC) ? 0 : -ENOMEM;
}

/* No .owner: the internal mount must not pin the module while devices exist. */
static struct file_system_type p2p_fs_type = {
	.name = "p2p_exporter",
	.init_fs_context = p2p_fs_init_fs_context,
	.kill_sb = kill_anon_super,
};

static struct vfsmount *p2p_mnt;
static int p2p_mnt_count;

static struct inode *p2p_inode_new(void)
{
	struct inode *inode;
	int ret;

	ret = simple_pin_fs(&p2p_fs_type, &p2p_mnt, &p2p_mnt_count);
	if (ret)
		return ERR_PTR(ret);
	inode = alloc_anon_inode(p2p_mnt->mnt_sb);
	if (IS_ERR(inode))
		simple_release_fs(&p2p_mnt, &p2p_mnt_count);
	return inode;
}

static void p2p_inode_put(struct inode *inode)
{
	iput(inode);
	simple_release_fs(&p2p_mnt, &p2p_mnt_count);
}

/* ---- lifetime ----------------------------------------------------------- */

static void exp_release(struct kref *ref)
{
	struct p2p_exporter *exp = container_of(ref, struct p2p_exporter, ref);

	mutex_lock(&exp_list_lock);
	list_del(&exp->node);
	mutex_unlock(&exp_list_lock);
	if (exp->inode)
		p2p_inode_put(exp->inode);
	bitmap_free(exp->bitmap);
	xa_destroy(&exp->objects);
	if (exp->index >= 0)
		ida_free(&exp_ida, exp->index);
	pci_dev_put(exp->pdev);
	kfree(exp);
}

static void exp_put(struct p2p_exporter *exp)
{
	kref_put(&exp->ref, exp_release);
}

static void import_free(struct p2p_import *rec)
{
	put_device(rec->dev);
	atomic_long_dec(&exp_importer_refs);
	kfree(rec);
}

static void obj_release(struct kref *ref)
{
	struct p2p_obj *obj = container_of(ref, struct p2p_obj, ref);
	struct p2p_exporter *exp = obj->exp;
	struct p2p_import *rec, *tmp;
	LIST_HEAD(stale);

	mutex_lock(&exp->lock);
	spin_lock(&exp->imports_lock);
	list_for_each_entry_safe(rec, tmp, &obj->imports, node) {
		list_move(&rec->node, &stale);
		exp->nr_imports--;
		stat_add(exp, EXP_IMPORTS, -1);
	}
	list_del(&obj->node);
	spin_unlock(&exp->imports_lock);
	bitmap_clear(exp->bitmap, obj->offset >> PAGE_SHIFT, obj->npages);
	stat_add(exp, EXP_OBJECTS, -1);
	wake_up_all(&exp->wq);
	mutex_unlock(&exp->lock);

	list_for_each_entry_safe(rec, tmp, &stale, node) {
		p2p_warn("%s: object %u freed while %s still had it mapped [%lx-%lx)\n",
			exp->bdf, obj->handle, dev_name(rec->dev), rec->start,
			rec->end);
		import_free(rec);
	}
	kfree(obj);
	exp_put(exp);
}

static void obj_put(struct p2p_obj *obj)
{
	kref_put(&obj->ref, obj_release);
}

/* ---- BAR2 allocator ------------------------------------------------------ */

/* First fit at or after @from, wrapping once; exp->lock held. */
static long bar_alloc(struct p2p_exporter *exp, unsigned long npages,
		      unsigned long from)
{
	unsigned long pos;

	pos = bitmap_find_next_zero_area(exp->bitmap, exp->bar_pages, from,
					 npages, 0);
	if (pos + npages > exp->bar_pages && from)
		pos = bitmap_find_next_zero_area(exp->bitmap, exp->bar_pages,
						 0, npages, 0);
	if (pos + npages > exp->bar_pages)
		return -ENOSPC;
	bitmap_set(exp->bitmap, pos, npages);
	return pos;
}

/* ---- P2P policy ----------------------------------------------------------- */

/*
 * May @importer reach BAR2 of @exp by peer-to-peer DMA? Stock Debian 6.1 has
 * no CONFIG_PCI_P2PDMA, hence no pci_p2pdma_distance(): the policy is the
 * module parameters. A kernel with P2PDMA also asks the topology.
 */
static bool exporter_allow_p2p(struct p2p_exporter *exp, struct device *importer)
{
	bool denied;

	if (!allow_p2p)
		return false;
	/* A write to the parameter frees the old string: read it locked. */
	kernel_param_lock(THIS_MODULE);
	denied = deny_importer && *deny_importer &&
		 sysfs_streq(deny_importer, dev_name(importer));
	kernel_param_unlock(THIS_MODULE);
	if (denied)
		return false;
#if IS_ENABLED(CONFIG_PCI_P2PDMA)
	if (use_p2pdma_distance &&
	    (!dev_is_pci(importer) ||
	     pci_p2pdma_distance_many(exp->pdev, &importer, 1, true) < 0))
		return false;
#endif
	return true;
}

/* ---- the compat p2p_map / p2p_unmap ---------------------------------------- */

bool p2p_compat_vma_is_exporter(struct vm_area_struct *vma)
{
	return vma && vma->vm_ops == &exp_vm_ops;
}
EXPORT_SYMBOL_GPL(p2p_compat_vma_is_exporter);

long p2p_compat_map_flags(struct vm_area_struct *vma, struct device *importer,
			  unsigned long start, unsigned long end,
			  dma_addr_t *pa, bool write, unsigned int flags)
{
	struct p2p_exporter *exp;
	struct p2p_import *rec;
	struct p2p_obj *obj;
	unsigned long first, n, i;
	bool allowed;
	long ret;

	if (!p2p_compat_vma_is_exporter(vma))
		return -EOPNOTSUPP;
	if (!importer || !pa || (flags & ~P2P_MAP_PIN))
		return -EINVAL;
	if ((start | end) & ~PAGE_MASK || start >= end ||
	    start < vma->vm_start || end > vma->vm_end)
		return -EINVAL;
	if (write && !(vma->vm_flags & VM_WRITE))
		return -EACCES;
	obj = vma->vm_private_data;
	exp = obj->exp;
	first = (vma->vm_pgoff & OBJ_PGOFF_MASK) +
		((start - vma->vm_start) >> PAGE_SHIFT);
	n = (end - start) >> PAGE_SHIFT;
	if (first + n > obj->npages)
		return -EINVAL;

	rec = kzalloc(sizeof(*rec), GFP_KERNEL);
	if (!rec)
		return -ENOMEM;
	allowed = exporter_allow_p2p(exp, importer);	/* may sleep */

	mutex_lock(&exp->lock);
	while (obj->moving && !exp->dead) {
		mutex_unlock(&exp->lock);
		if (wait_event_killable(exp->wq, !READ_ONCE(obj->moving) ||
					READ_ONCE(exp->dead))) {
			kfree(rec);
			return -EINTR;
		}
		mutex_lock(&exp->lock);
	}
	if (exp->dead) {
		ret = -ENODEV;
		goto out_unlock;
	}
	if (!allowed) {
		stat_add(exp, EXP_P2P_DENIED, 1);
		ret = -EXDEV;
		goto out_unlock;
	}
	if ((flags & P2P_MAP_PIN) &&
	    (refuse_pin || (obj->flags & P2P_OBJ_NO_PIN))) {
		stat_add(exp, EXP_REFUSED, 1);
		ret = -EPERM;
		goto out_unlock;
	}
	for (i = 0; i < n; i++)
		pa[i] = exp->bar_bus + obj->offset + ((first + i) << PAGE_SHIFT);

	rec->dev = get_device(importer);
	atomic_long_inc(&exp_importer_refs);
	rec->start = start;
	rec->end = end;
	rec->first = pa[0];
	rec->write = write;
	rec->pinned = flags & P2P_MAP_PIN;
	rec->t_ns = ktime_get_real_ns();
	spin_lock(&exp->imports_lock);
	list_add_tail(&rec->node, &obj->imports);
	obj->nr_imports++;
	exp->nr_imports++;
	spin_unlock(&exp->imports_lock);
	stat_add(exp, EXP_IMPORTS, 1);
	stat_add(exp, EXP_MAPS, 1);
	mutex_unlock(&exp->lock);
	/* @rec is not ours any more: a p2p_unmap may already have freed it. */
	exp_event(exp, "map importer=%s handle=%u pages=%lu bus=0x%llx%s",
		  dev_name(importer), obj->handle, n, (u64)pa[0],
		  (flags & P2P_MAP_PIN) ? " pinned" : "");
	return 0;

out_unlock:
	mutex_unlock(&exp->lock);
	kfree(rec);
	if (ret == -EPERM || ret == -EXDEV)
		exp_event(exp, "map refused importer=%s handle=%u err=%ld",
			  dev_name(importer), obj->handle, ret);
	return ret;
}
EXPORT_SYMBOL_GPL(p2p_compat_map_flags);

long p2p_compat_map(struct vm_area_struct *vma, struct device *importer,
		    unsigned long start, unsigned long end, dma_addr_t *pa,
		    bool write)
{
	return p2p_compat_map_flags(vma, importer, start, end, pa, write, 0);
}
EXPORT_SYMBOL_GPL(p2p_compat_map);

/*
 * Compat p2p_unmap does not dereference @vma: an importer's notifier may run
 * after the VMA it mapped was split, and the struct it cached may then be
 * gone (see README, "limitations"). The record is found by importer, range
 * and first bus address, in every exporter, dead ones included.
 */
static bool import_match(struct p2p_import *rec, struct device *importer,
			 unsigned long start, unsigned long end,
			 dma_addr_t *pa, bool exact)
{
	return rec->dev == importer && rec->start == start && rec->end == end &&
	       (!exact || !pa || rec->first == pa[0]);
}

/* exp_list_lock held; on success returns with (*expp)->imports_lock held. */
static struct p2p_import *import_find(struct device *importer,
				      unsigned long start, unsigned long end,
				      dma_addr_t *pa, struct p2p_exporter **expp,
				      struct p2p_obj **objp)
{
	struct p2p_exporter *exp;
	struct p2p_import *rec;
	struct p2p_obj *obj;
	int exact;

	for (exact = 1; exact >= 0; exact--) {
		list_for_each_entry(exp, &exp_list, node) {
			spin_lock(&exp->imports_lock);
			list_for_each_entry(obj, &exp->obj_list, node) {
				list_for_each_entry(rec, &obj->imports, node) {
					if (!import_match(rec, importer, start,
							  end, pa, exact))
						continue;
					*expp = exp;
					*objp = obj;
					return rec;
				}
			}
			spin_unlock(&exp->imports_lock);
		}
	}
	return NULL;
}

long p2p_compat_unmap(struct vm_area_struct *vma, struct device *importer,
		      unsigned long start, unsigned long end, dma_addr_t *pa)
{
	struct p2p_exporter *exp;
	struct p2p_import *rec;
	struct p2p_obj *obj;
	char bdf[16];
	u32 handle;
	bool dead;

	if (!importer)
		return -EINVAL;
	mutex_lock(&exp_list_lock);
	rec = import_find(importer, start, end, pa, &exp, &obj);
	if (!rec) {
		mutex_unlock(&exp_list_lock);
		p2p_warn_ratelimited("p2p_unmap by %s of [%lx-%lx) that it has not mapped\n",
				    dev_name(importer), start, end);
		return -ENOENT;
	}
	list_del(&rec->node);
	obj->nr_imports--;
	exp->nr_imports--;
	stat_add(exp, EXP_IMPORTS, -1);
	stat_add(exp, EXP_UNMAPS, 1);
	wake_up_all(&exp->wq);
	handle = obj->handle;
	dead = READ_ONCE(exp->dead);
	strscpy(bdf, exp->bdf, sizeof(bdf));
	spin_unlock(&exp->imports_lock);
	mutex_unlock(&exp_list_lock);

	p2p_compat_event(KBUILD_MODNAME, bdf,
			 "unmap importer=%s handle=%u bus=0x%llx%s",
			 dev_name(importer), handle, (u64)rec->first,
			 dead ? " (device gone)" : "");
	import_free(rec);
	return 0;
}
EXPORT_SYMBOL_GPL(p2p_compat_unmap);

/* Name every importer still holding a p2p_map of @only (or of any object). */
static void exp_warn_stale(struct p2p_exporter *exp, struct p2p_obj *only,
			   const char *why)
{
	struct p2p_import *rec;
	struct p2p_obj *obj;

	spin_lock(&exp->imports_lock);
	list_for_each_entry(obj, &exp->obj_list, node) {
		if (only && obj != only)
			continue;
		list_for_each_entry(rec, &obj->imports, node)
			p2p_warn("%s: %s: importer %s (driver %s) did not p2p_unmap object %u [%lx-%lx) bus 0x%llx%s, mapped at t_ns=%llu\n",
				exp->bdf, why, dev_name(rec->dev),
				dev_driver_string(rec->dev), obj->handle,
				rec->start, rec->end, (u64)rec->first,
				rec->pinned ? " (pinned)" : "", rec->t_ns);
	}
	spin_unlock(&exp->imports_lock);
}

/* ---- CPU mapping ------------------------------------------------------------- */

static void exp_vm_open(struct vm_area_struct *vma)
{
	struct p2p_obj *obj = vma->vm_private_data;

	kref_get(&obj->ref);
}

static void exp_vm_close(struct vm_area_struct *vma)
{
	obj_put(vma->vm_private_data);
}

static vm_fault_t exp_vm_fault(struct vm_fault *vmf)
{
	struct vm_area_struct *vma = vmf->vma;
	struct p2p_obj *obj = vma->vm_private_data;
	struct p2p_exporter *exp = obj->exp;
	unsigned long idx = vmf->pgoff & OBJ_PGOFF_MASK;
	vm_fault_t ret;

	if (idx >= obj->npages)
		return VM_FAULT_SIGBUS;

	mutex_lock(&exp->lock);
	while (obj->moving && !exp->dead) {
		mutex_unlock(&exp->lock);
		if (wait_event_killable(exp->wq, !READ_ONCE(obj->moving) ||
					READ_ONCE(exp->dead)))
			return VM_FAULT_SIGBUS;
		mutex_lock(&exp->lock);
	}
	if (exp->dead) {
		/* The BAR is gone: user space gets SIGBUS, not stale memory. */
		mutex_unlock(&exp->lock);
		return VM_FAULT_SIGBUS;
	}
	ret = vmf_insert_pfn(vma, vmf->address,
			     PHYS_PFN(exp->bar_phys + obj->offset) + idx);
	mutex_unlock(&exp->lock);
	stat_add(exp, EXP_FAULTS, 1);
	return ret;
}

static const struct vm_operations_struct exp_vm_ops = {
	.open = exp_vm_open,
	.close = exp_vm_close,
	.fault = exp_vm_fault,
};

/* ---- objects ----------------------------------------------------------------- */

static struct p2p_obj *obj_lookup(struct p2p_exporter *exp, u32 handle)
{
	struct p2p_obj *obj;

	mutex_lock(&exp->lock);
	obj = exp->dead ? NULL : xa_load(&exp->objects, handle);
	if (obj)
		kref_get(&obj->ref);
	mutex_unlock(&exp->lock);
	return obj;
}

static int obj_create(struct p2p_exporter *exp, struct file *file,
		      struct p2p_create_object *req)
{
	struct p2p_obj *obj;
	u64 size = PAGE_ALIGN(req->size);
	long pos;
	int ret;

	if (!req->size || req->size > P2P_OBJ_MAX_SIZE ||
	    (req->flags & ~P2P_OBJ_NO_PIN))
		return -EINVAL;
	obj = kzalloc(sizeof(*obj), GFP_KERNEL);
	if (!obj)
		return -ENOMEM;
	kref_init(&obj->ref);
	INIT_LIST_HEAD(&obj->imports);
	obj->npages = size >> PAGE_SHIFT;
	obj->flags = req->flags;
	obj->owner = file;

	mutex_lock(&exp->lock);
	if (exp->dead) {
		ret = -ENODEV;
		goto err_unlock;
	}
	pos = bar_alloc(exp, obj->npages, 0);
	if (pos < 0) {
		ret = pos;
		goto err_unlock;
	}
	obj->offset = (u64)pos << PAGE_SHIFT;
	ret = xa_alloc(&exp->objects, &obj->handle, obj,
		       XA_LIMIT(1, P2P_OBJ_MAX_HANDLE), GFP_KERNEL);
	if (ret) {
		bitmap_clear(exp->bitmap, pos, obj->npages);
		goto err_unlock;
	}
	memset_io(exp->bar + obj->offset, 0, size);
	obj->exp = exp;
	kref_get(&exp->ref);
	spin_lock(&exp->imports_lock);
	list_add_tail(&obj->node, &exp->obj_list);
	spin_unlock(&exp->imports_lock);
	stat_add(exp, EXP_OBJECTS, 1);
	stat_add(exp, EXP_OBJECTS_CREATED, 1);
	req->handle = obj->handle;
	req->offset = obj->offset;
	req->mmap_offset = P2P_OBJ_MMAP_OFFSET(obj->handle);
	req->bus_addr = exp->bar_bus + obj->offset;
	mutex_unlock(&exp->lock);
	/* Published: another thread may DESTROY and free @obj from here on. */
	exp_event(exp, "create handle=%u offset=0x%llx size=%llu", req->handle,
		  req->offset, size);
	return 0;

err_unlock:
	mutex_unlock(&exp->lock);
	kfree(obj);
	return ret;
}

static int obj_destroy(struct p2p_exporter *exp, struct file *file, u32 handle)
{
	struct p2p_obj *obj;

	mutex_lock(&exp->lock);
	obj = xa_load(&exp->objects, handle);
	if (!obj || obj->owner != file) {
		mutex_unlock(&exp->lock);
		return -ENOENT;
	}
	xa_erase(&exp->objects, handle);
	obj->owner = NULL;
	mutex_unlock(&exp->lock);
	obj_put(obj);	/* mappings keep it alive until munmap */
	return 0;
}

static int obj_info(struct p2p_exporter *exp, struct p2p_object_info *info)
{
	struct p2p_obj *obj = obj_lookup(exp, info->handle);

	if (!obj)
		return -ENOENT;
	mutex_lock(&exp->lock);
	info->flags = obj->flags;
	info->size = (u64)obj->npages << PAGE_SHIFT;
	info->offset = obj->offset;
	info->mmap_offset = P2P_OBJ_MMAP_OFFSET(obj->handle);
	info->bus_addr = exp->bar_bus + obj->offset;
	info->importers = READ_ONCE(obj->nr_imports);
	info->generation = obj->generation;
	mutex_unlock(&exp->lock);
	obj_put(obj);
	return 0;
}

/* ---- eviction: move an object to another BAR2 offset ------------------------- */

static void bar_copy(struct p2p_exporter *exp, u64 dst, u64 src, u64 len,
		     void *bounce)
{
	while (len) {
		size_t n = min_t(u64, len, PAGE_SIZE);

		memcpy_fromio(bounce, exp->bar + src, n);
		memcpy_toio(exp->bar + dst, bounce, n);
		src += n;
		dst += n;
		len -= n;
		cond_resched();
	}
}

static int obj_evict(struct p2p_exporter *exp, u32 handle,
		     struct p2p_evict *out)
{
	struct p2p_import *rec;
	struct p2p_obj *obj;
	u64 old, size, t0, t1, t2;
	bool timed_out = false;
	void *bounce;
	long pos = 0;
	int ret = 0;

	bounce = kmalloc(PAGE_SIZE, GFP_KERNEL);
	if (!bounce)
		return -ENOMEM;
	mutex_lock(&exp->evict_lock);
	obj = obj_lookup(exp, handle);
	if (!obj) {
		ret = exp->dead ? -ENODEV : -ENOENT;
		goto out_unlock_evict;
	}

	mutex_lock(&exp->lock);
	spin_lock(&exp->imports_lock);
	list_for_each_entry(rec, &obj->imports, node) {
		if (rec->pinned) {
			stat_add(exp, EXP_EVICT_BUSY, 1);
			ret = -EBUSY;
			break;
		}
	}
	spin_unlock(&exp->imports_lock);
	if (!ret) {
		/* Search after the object first, so that it really moves. */
		pos = bar_alloc(exp, obj->npages,
				(obj->offset >> PAGE_SHIFT) + obj->npages);
		if (pos < 0)
			ret = pos;
	}
	if (ret) {
		mutex_unlock(&exp->lock);
		goto out_put;
	}
	old = obj->offset;
	size = (u64)obj->npages << PAGE_SHIFT;
	obj->moving = true;
	out->handle = handle;
	out->importers = READ_ONCE(obj->nr_imports);
	out->old_offset = old;
	out->new_offset = (u64)pos << PAGE_SHIFT;
	mutex_unlock(&exp->lock);

	t0 = exp_event(exp, "evict begin handle=%u old=0x%llx new=0x%llx importers=%u",
		       handle, old, out->new_offset, out->importers);
	/* Zap every CPU mapping: importers' mmu notifiers run from here. */
	unmap_mapping_range(exp->inode->i_mapping,
			    (loff_t)P2P_OBJ_MMAP_OFFSET(handle), size, 1);
	t1 = ktime_get_real_ns();
	if (!wait_event_timeout(exp->wq, READ_ONCE(obj->nr_imports) == 0,
				msecs_to_jiffies(evict_wait_ms))) {
		timed_out = true;
		stat_add(exp, EXP_EVICT_TIMEOUTS, 1);
		exp_warn_stale(exp, obj, "evict timed out");
	}
	t2 = ktime_get_real_ns();

	bar_copy(exp, out->new_offset, old, size, bounce);

	mutex_lock(&exp->lock);
	obj->offset = out->new_offset;
	obj->generation++;
	obj->moving = false;
	if (timed_out)	/* an importer may still DMA there: never reuse it */
		stat_add(exp, EXP_LEAKED_PAGES, obj->npages);
	else
		bitmap_clear(exp->bitmap, old >> PAGE_SHIFT, obj->npages);
	stat_add(exp, EXP_EVICTIONS, 1);
	wake_up_all(&exp->wq);
	mutex_unlock(&exp->lock);

	out->zap_ns = t1 - t0;
	out->wait_ns = t2 - t1;
	out->timed_out = timed_out;
	exp_event(exp, "evict done handle=%u offset=0x%llx zap_ns=%llu wait_ns=%llu%s",
		  handle, out->new_offset, out->zap_ns, out->wait_ns,
		  timed_out ? " timed_out" : "");
out_put:
	obj_put(obj);
out_unlock_evict:
	mutex_unlock(&exp->evict_lock);
	kfree(bounce);
	return ret;
}

/* ---- character device ---------------------------------------------------------- */

static int exp_open(struct inode *inode, struct file *file)
{
	struct miscdevice *misc = file->private_data;
	struct p2p_exporter *exp = container_of(misc, struct p2p_exporter, misc);

	/* misc_open() holds misc_mtx: remove cannot free @exp under us. */
	kref_get(&exp->ref);
	file->private_data = exp;
	/* Every file shares one address_space, so one zap reaches all VMAs. */
	file->f_mapping = exp->inode->i_mapping;
	return 0;
}

static int exp_file_release(struct inode *inode, struct file *file)
{
	struct p2p_exporter *exp = file->private_data;
	struct p2p_obj *obj, *tmp;
	unsigned long handle;
	LIST_HEAD(reap);

	mutex_lock(&exp->lock);
	xa_for_each(&exp->objects, handle, obj) {
		if (obj->owner != file)
			continue;
		xa_erase(&exp->objects, handle);
		obj->owner = NULL;
		list_add(&obj->reap, &reap);
	}
	mutex_unlock(&exp->lock);
	list_for_each_entry_safe(obj, tmp, &reap, reap)
		obj_put(obj);
	exp_put(exp);
	return 0;
}

static int exp_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct p2p_exporter *exp = file->private_data;
	u32 handle = vma->vm_pgoff >> OBJ_PGOFF_SHIFT;
	unsigned long first = vma->vm_pgoff & OBJ_PGOFF_MASK;
	const vm_flags_t flags = VM_IO | VM_PFNMAP | VM_DONTEXPAND |
				 VM_DONTDUMP | VM_DONTCOPY;
	struct p2p_obj *obj;

	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	if (READ_ONCE(exp->dead))
		return -ENODEV;
	obj = obj_lookup(exp, handle);
	if (!obj)
		return -EINVAL;
	if (first + vma_pages(vma) > obj->npages) {
		obj_put(obj);
		return -EINVAL;
	}
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	vm_flags_set(vma, flags);
#else
	vma->vm_flags |= flags;
#endif
	vma->vm_page_prot = pgprot_writecombine(vm_get_page_prot(vma->vm_flags));
	vma->vm_ops = &exp_vm_ops;
	vma->vm_private_data = obj;	/* the reference taken by obj_lookup */
	return 0;
}

static void exp_fill_info(struct p2p_exporter *exp, struct p2p_exporter_info *info)
{
	u64 *out = (u64 *)&info->stats;
	int i;

	BUILD_BUG_ON(sizeof(info->stats) != EXP_NR_STATS * sizeof(u64));
	memset(info, 0, sizeof(*info));
	info->bar_size = exp->bar_size;
	info->bar_bus = exp->bar_bus;
	info->bar_phys = exp->bar_phys;
	info->dead = READ_ONCE(exp->dead);
	strscpy(info->bdf, exp->bdf, sizeof(info->bdf));
	for (i = 0; i < EXP_NR_STATS; i++)
		out[i] = atomic64_read(&exp->stats[i]);
}

static long exp_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct p2p_exporter *exp = file->private_data;
	void __user *uarg = (void __user *)arg;
	union {
		struct p2p_create_object create;
		struct p2p_object_info info;
		struct p2p_evict evict;
		struct p2p_exporter_info dev;
		u32 handle;
	} u;
	long ret;

	if (_IOC_SIZE(cmd) > sizeof(u))
		return -ENOTTY;
	if ((_IOC_DIR(cmd) & _IOC_WRITE) &&
	    copy_from_user(&u, uarg, _IOC_SIZE(cmd)))
		return -EFAULT;

	switch (cmd) {
	case P2P_EXP_CREATE_OBJECT:
		ret = obj_create(exp, file, &u.create);
		break;
	case P2P_EXP_DESTROY_OBJECT:
		ret = obj_destroy(exp, file, u.handle);
		break;
	case P2P_EXP_OBJECT_INFO:
		ret = obj_info(exp, &u.info);
		break;
	case P2P_EXP_EVICT:
		ret = obj_evict(exp, u.evict.handle, &u.evict);
		break;
	case P2P_EXP_INFO:
		exp_fill_info(exp, &u.dev);
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

static const struct file_operations exp_fops = {
	.owner = THIS_MODULE,
	.open = exp_open,
	.release = exp_file_release,
	.mmap = exp_mmap,
	.unlocked_ioctl = exp_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

/* ---- debugfs ---------------------------------------------------------------------- */

static void stats_print(struct seq_file *m, atomic64_t *stats)
{
	int i;

	for (i = 0; i < EXP_NR_STATS; i++)
		seq_printf(m, "%s %lld\n", exp_stat_names[i],
			   atomic64_read(&stats[i]));
}

static int dev_stats_show(struct seq_file *m, void *unused)
{
	struct p2p_exporter *exp = m->private;

	seq_printf(m, "dead %d\n", READ_ONCE(exp->dead));
	stats_print(m, exp->stats);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(dev_stats);

static int total_stats_show(struct seq_file *m, void *unused)
{
	seq_printf(m, "devices %d\n", atomic_read(&exp_devices));
	stats_print(m, exp_totals);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(total_stats);

/*
 * What is live now, counted from the data itself rather than from the
 * counters: the p2p_map records on every object of every exporter (dead
 * ones too), and the importer device references those records hold. A
 * p2p_unmap that forgets its record, or its put_device(), shows here even
 * when the counters balance.
 */
static int live_show(struct seq_file *m, void *unused)
{
	struct p2p_exporter *exp;
	struct p2p_import *rec;
	struct p2p_obj *obj;
	unsigned long records = 0;

	mutex_lock(&exp_list_lock);
	list_for_each_entry(exp, &exp_list, node) {
		spin_lock(&exp->imports_lock);
		list_for_each_entry(obj, &exp->obj_list, node)
			list_for_each_entry(rec, &obj->imports, node)
				records++;
		spin_unlock(&exp->imports_lock);
	}
	mutex_unlock(&exp_list_lock);
	seq_printf(m, "records %lu\n", records);
	seq_printf(m, "importer_refs %ld\n", atomic_long_read(&exp_importer_refs));
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(live);

static int objects_show(struct seq_file *m, void *unused)
{
	struct p2p_exporter *exp = m->private;
	struct p2p_import *rec;
	struct p2p_obj *obj;

	mutex_lock(&exp->lock);
	spin_lock(&exp->imports_lock);
	list_for_each_entry(obj, &exp->obj_list, node) {
		seq_printf(m, "object %u offset 0x%llx size %lu bus 0x%llx flags 0x%x generation %u importers %lu%s%s\n",
			   obj->handle, obj->offset, obj->npages << PAGE_SHIFT,
			   (u64)(exp->bar_bus + obj->offset), obj->flags,
			   obj->generation, obj->nr_imports,
			   obj->moving ? " moving" : "",
			   obj->owner ? "" : " orphan");
		list_for_each_entry(rec, &obj->imports, node)
			seq_printf(m, "  importer %s driver %s va 0x%lx-0x%lx bus 0x%llx%s%s t_ns %llu\n",
				   dev_name(rec->dev),
				   dev_driver_string(rec->dev), rec->start,
				   rec->end, (u64)rec->first,
				   rec->write ? " write" : "",
				   rec->pinned ? " pinned" : "", rec->t_ns);
	}
	spin_unlock(&exp->imports_lock);
	mutex_unlock(&exp->lock);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(objects);

static ssize_t evict_write(struct file *file, const char __user *ubuf,
			   size_t len, loff_t *ppos)
{
	struct p2p_exporter *exp = file->private_data;
	struct p2p_evict ev = {};
	u32 handle;
	int ret;

	ret = kstrtou32_from_user(ubuf, len, 0, &handle);
	if (ret)
		return ret;
	ret = obj_evict(exp, handle, &ev);
	return ret ? ret : len;
}

static const struct file_operations evict_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.write = evict_write,
	.llseek = noop_llseek,
};

/* ---- PCI driver ---------------------------------------------------------------------- */

static int exp_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct p2p_exporter *exp;
	int ret, i;

	exp = kzalloc(sizeof(*exp), GFP_KERNEL);
	if (!exp)
		return -ENOMEM;
	kref_init(&exp->ref);
	mutex_init(&exp->lock);
	mutex_init(&exp->evict_lock);
	spin_lock_init(&exp->imports_lock);
	init_waitqueue_head(&exp->wq);
	xa_init_flags(&exp->objects, XA_FLAGS_ALLOC1);
	INIT_LIST_HEAD(&exp->obj_list);
	mutex_lock(&exp_list_lock);
	list_add_tail(&exp->node, &exp_list);
	mutex_unlock(&exp_list_lock);
	for (i = 0; i < EXP_NR_STATS; i++)
		atomic64_set(&exp->stats[i], 0);
	exp->pdev = pci_dev_get(pdev);
	exp->index = -1;
	strscpy(exp->bdf, pci_name(pdev), sizeof(exp->bdf));

	ret = pci_enable_device_mem(pdev);
	if (ret)
		goto err_put;
	ret = pci_request_region(pdev, EXP_BAR, KBUILD_MODNAME);
	if (ret)
		goto err_disable;
	exp->bar_size = pci_resource_len(pdev, EXP_BAR);
	if (!(pci_resource_flags(pdev, EXP_BAR) & IORESOURCE_MEM) ||
	    exp->bar_size < PAGE_SIZE) {
		dev_err(&pdev->dev, "BAR%d is not a memory BAR of at least a page\n",
			EXP_BAR);
		ret = -ENODEV;
		goto err_release;
	}
	exp->bar_phys = pci_resource_start(pdev, EXP_BAR);
	exp->bar_bus = pci_bus_address(pdev, EXP_BAR);
	exp->bar_pages = exp->bar_size >> PAGE_SHIFT;
	exp->bar = pci_iomap_wc(pdev, EXP_BAR, 0);
	if (!exp->bar) {
		ret = -ENOMEM;
		goto err_release;
	}
	exp->bitmap = bitmap_zalloc(exp->bar_pages, GFP_KERNEL);
	if (!exp->bitmap) {
		ret = -ENOMEM;
		goto err_unmap;
	}
	exp->inode = p2p_inode_new();
	if (IS_ERR(exp->inode)) {
		ret = PTR_ERR(exp->inode);
		exp->inode = NULL;
		goto err_unmap;
	}
	exp->index = ida_alloc(&exp_ida, GFP_KERNEL);
	if (exp->index < 0) {
		ret = exp->index;
		goto err_unmap;
	}
	snprintf(exp->name, sizeof(exp->name), "p2p-exporter%d", exp->index);

	exp->dbg = debugfs_create_dir(exp->bdf, exp_dbg_root);
	debugfs_create_file("stats", 0444, exp->dbg, exp, &dev_stats_fops);
	debugfs_create_file("objects", 0444, exp->dbg, exp, &objects_fops);
	debugfs_create_file("evict", 0200, exp->dbg, exp, &evict_fops);

	exp->misc.minor = MISC_DYNAMIC_MINOR;
	exp->misc.name = exp->name;
	exp->misc.fops = &exp_fops;
	exp->misc.parent = &pdev->dev;
	exp->misc.mode = 0666;
	pci_set_drvdata(pdev, exp);
	ret = misc_register(&exp->misc);
	if (ret)
		goto err_debugfs;
	exp->misc_registered = true;
	atomic_inc(&exp_devices);

	exp_event(exp, "probe dev=/dev/%s bar2_bus=0x%llx bar2_size=%llu",
		  exp->name, (u64)exp->bar_bus, (u64)exp->bar_size);
	return 0;

err_debugfs:
	debugfs_remove_recursive(exp->dbg);
err_unmap:
	pci_iounmap(pdev, exp->bar);
err_release:
	pci_release_region(pdev, EXP_BAR);
err_disable:
	pci_disable_device(pdev);
err_put:
	exp_put(exp);
	return ret;
}

/*
 * Hot-unplug: no new opens, no new maps (-ENODEV), every CPU mapping zapped
 * (later touches: SIGBUS), every importer invalidated through its notifier;
 * then wait, bounded by unplug_wait_ms, for every p2p_unmap before the BAR
 * goes. Open files and VMAs keep @exp itself alive.
 */
static void exp_remove(struct pci_dev *pdev)
{
	struct p2p_exporter *exp = pci_get_drvdata(pdev);
	unsigned long at_begin, after_zap, left;
	u64 t0, t1, t2;
	bool timed_out = false;

	t0 = exp_event(exp, "remove begin importers=%lu", READ_ONCE(exp->nr_imports));
	misc_deregister(&exp->misc);
	exp->misc_registered = false;

	mutex_lock(&exp->evict_lock);	/* let a running eviction finish */
	mutex_lock(&exp->lock);
	exp->dead = true;
	at_begin = READ_ONCE(exp->nr_imports);
	wake_up_all(&exp->wq);
	mutex_unlock(&exp->lock);

	unmap_mapping_range(exp->inode->i_mapping, 0, 0, 1);
	t1 = ktime_get_real_ns();
	after_zap = READ_ONCE(exp->nr_imports);
	exp_event(exp, "remove zapped importers_before=%lu importers_after=%lu zap_ns=%llu",
		  at_begin, after_zap, t1 - t0);
	if (at_begin)
		stat_add(exp, EXP_UNPLUG_WAITS, 1);
	if (after_zap) {
		left = wait_event_timeout(exp->wq,
					  READ_ONCE(exp->nr_imports) == 0,
					  msecs_to_jiffies(unplug_wait_ms));
		if (!left) {
			timed_out = true;
			stat_add(exp, EXP_UNPLUG_TIMEOUTS, 1);
			exp_warn_stale(exp, NULL, "unplug wait timed out");
		}
	}
	t2 = ktime_get_real_ns();
	if (timed_out)
		exp_event(exp, "remove unplug wait timed out after %u ms, importers=%lu",
			  unplug_wait_ms, READ_ONCE(exp->nr_imports));
	else
		exp_event(exp, "remove all importers unmapped wait_ns=%llu",
			  t2 - t1);
	mutex_unlock(&exp->evict_lock);

	debugfs_remove_recursive(exp->dbg);
	exp->dbg = NULL;
	pci_iounmap(pdev, exp->bar);
	exp->bar = NULL;
	pci_release_region(pdev, EXP_BAR);
	pci_disable_device(pdev);
	atomic_dec(&exp_devices);
	exp_event(exp, "remove done total_ns=%llu", ktime_get_real_ns() - t0);
	exp_put(exp);
}

static const struct pci_device_id exp_ids[] = {
	{ PCI_DEVICE(0x1af4, 0x1110) },	/* ivshmem */
	{ }
};
MODULE_DEVICE_TABLE(pci, exp_ids);

static struct pci_driver exp_driver = {
	.name = KBUILD_MODNAME,
	.id_table = exp_ids,
	.probe = exp_probe,
	.remove = exp_remove,
};

static int __init exp_init(void)
{
	int ret;

	exp_dbg_root = debugfs_create_dir(KBUILD_MODNAME, NULL);
	debugfs_create_file("stats", 0444, exp_dbg_root, NULL, &total_stats_fops);
	debugfs_create_file("events", 0444, exp_dbg_root, NULL, &events_fops);
	debugfs_create_file("live", 0444, exp_dbg_root, NULL, &live_fops);
	ret = pci_register_driver(&exp_driver);
	if (ret)
		debugfs_remove_recursive(exp_dbg_root);
	return ret;
}

static void __exit exp_exit(void)
{
	pci_unregister_driver(&exp_driver);
	debugfs_remove_recursive(exp_dbg_root);
}

module_init(exp_init);
module_exit(exp_exit);

MODULE_DESCRIPTION("P2P testbed exporter (GPU stand-in) on ivshmem BAR2");
MODULE_AUTHOR("p2p-testbed");
MODULE_LICENSE("GPL");
