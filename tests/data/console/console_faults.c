// SPDX-License-Identifier: GPL-2.0
/*
 * console_faults: make the guest kernel print, on demand, the reports that
 * testbed/guest/console.py recognises, so that tests/data/console/ holds real
 * captures of them. A deliberately broken module: never load it anywhere else.
 *
 *	echo warn > /sys/kernel/debug/console_faults/trigger
 *
 * The fault runs in the context of the writing process. debugfs holds no lock
 * across ->write(), so after an Oops has killed one writer the next write
 * still works (unless panic_on_oops is set, of course).
 */
#include <linux/bug.h>
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/fs.h>
#include <linux/jiffies.h>
#include <linux/module.h>
#include <linux/preempt.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>

static struct dentry *dir;

static noinline void fault_oops(void)
{
	*(volatile int *)NULL = 1;	/* write to page 0: "Oops: 0002" */
}

static noinline void fault_gpf(void)
{
	*(volatile int *)0xdead000000000100UL = 1;	/* non-canonical (LIST_POISON1) */
}

static noinline void fault_bug(void)
{
	BUG();
}

static noinline void fault_warn(void)
{
	WARN(1, "console_faults: warning requested from user space\n");
}

static noinline void fault_atomic(void)
{
	preempt_disable();
	msleep(10);			/* "BUG: scheduling while atomic" */
	preempt_enable();
}

static noinline void fault_hung(void)
{
	/* D state, long enough for khungtaskd with hung_task_timeout_secs=2. */
	schedule_timeout_uninterruptible(msecs_to_jiffies(5000));
}

static noinline void fault_spin(void)
{
	/* No scheduling for 4 s: a soft lockup with watchdog_thresh=1. */
	preempt_disable();
	mdelay(4000);
	preempt_enable();
}

static void free_head(struct rcu_head *head)
{
	kfree(head);
}

static noinline void fault_rcu(void)
{
	struct rcu_head *head = kmalloc(sizeof(*head), GFP_KERNEL);

	/*
	 * Block inside a (preemptible) RCU reader while a grace period is
	 * pending: with rcu_cpu_stall_timeout=3 the grace-period kthread reports
	 * "rcu_preempt detected stalls on CPUs/tasks" naming this task.
	 */
	rcu_read_lock();
	if (head)
		call_rcu(head, free_head);
	msleep(8000);
	rcu_read_unlock();
}

static ssize_t trigger_write(struct file *file, const char __user *ubuf,
			     size_t len, loff_t *ppos)
{
	char buf[16] = {};

	if (copy_from_user(buf, ubuf, min(len, sizeof(buf) - 1)))
		return -EFAULT;
	if (sysfs_streq(buf, "oops"))
		fault_oops();
	else if (sysfs_streq(buf, "gpf"))
		fault_gpf();
	else if (sysfs_streq(buf, "bug"))
		fault_bug();
	else if (sysfs_streq(buf, "warn"))
		fault_warn();
	else if (sysfs_streq(buf, "atomic"))
		fault_atomic();
	else if (sysfs_streq(buf, "hung"))
		fault_hung();
	else if (sysfs_streq(buf, "spin"))
		fault_spin();
	else if (sysfs_streq(buf, "rcu"))
		fault_rcu();
	else
		return -EINVAL;
	return len;
}

static const struct file_operations trigger_fops = {
	.owner = THIS_MODULE,
	.write = trigger_write,
};

static int __init console_faults_init(void)
{
	dir = debugfs_create_dir("console_faults", NULL);
	debugfs_create_file("trigger", 0200, dir, NULL, &trigger_fops);
	return 0;
}

static void __exit console_faults_exit(void)
{
	debugfs_remove_recursive(dir);
}

module_init(console_faults_init);
module_exit(console_faults_exit);
MODULE_DESCRIPTION("Deliberate kernel faults for console-parser test captures");
MODULE_LICENSE("GPL");
