//! Threads and the preemptive scheduler: run queues per VP, placement over every VP of
//! every node, sleeping with deadlines, and the idle loop (docs/linux-abi.md, "Threads").
//!
//! - A [`Thread`] lives at the base of its own pages (the header page, then its kernel
//!   stack), allocated on the node of the VP it is first placed on. Every field is an
//!   atomic, so any VP may look at any thread; the fields a lock protects say which.
//! - Each VP has a [`RunQueue`] on a page of its own (coherence works page by page), with
//!   the VP's idle context in it. A VP runs the first thread of its queue, else steals
//!   one from another VP (same node first), else waits in the VMM (`SpinWait` on the
//!   queue's `kick` word; an enqueue bumps it and sends a waiting VP an IPI).
//! - The kernel itself is not preemptible: the tick (every VP's timer, 100 Hz) switches
//!   threads only when it interrupts program code; interrupting the kernel sets the VP's
//!   `resched` flag, which the system call exit honours. Blocking calls switch directly.
//! - Sleeping without lost wake-ups: a thread sets itself SLEEPING (under the lock of
//!   what it waits on), then calls [`schedule`]. A waker moves SLEEPING to WAKING with one
//!   compare-exchange (so one waker wins), waits until the sleeper is off its VP
//!   (`on_cpu`, cleared by the thread that switched in, as Linux's `p->on_cpu`), and
//!   queues it. A thread that stops running is queued again only by the thread that
//!   takes its VP, once nothing runs on its stack any more.

pub mod hotplug;
pub mod placement;
pub mod switch;

use core::hint::spin_loop;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use vima::layout::{MAX_VPS, PAGE_SIZE};

use crate::interrupts::{self, current_vp};
use crate::linux::entry::SyscallFrame;
use crate::machine::kernel;
use crate::spinlock::RawSpinLock;
use crate::sync::PageAligned;
use crate::{alloc, vima_calls};

/// Pages of a thread's kernel stack.
pub const KERNEL_STACK_PAGES: u64 = 8;
/// Pages of a thread: its header, then its kernel stack.
const THREAD_PAGES: u64 = KERNEL_STACK_PAGES + 1;

/// On a VP.
const RUNNING: u32 = 0;
/// Gave up its VP while runnable: the next thread there queues it.
const YIELDED: u32 = 1;
/// In a run queue.
const RUNNABLE: u32 = 2;
/// Waiting for a wake-up or its deadline.
const SLEEPING: u32 = 3;
/// A waker won it; queued once off its VP.
const WAKING: u32 = 4;
/// Exited: the next thread on its VP frees it.
const DEAD: u32 = 5;

/// `VpShared` byte offset of the VP's current thread (`guest[3]`).
const CURRENT_OFFSET: u64 = 48;
/// `VpShared` byte offset of the kernel stack top the system call entry switches to.
const KERNEL_RSP_OFFSET: u64 = crate::linux::entry::KERNEL_RSP_OFFSET;

/// No VP.
const NO_VP: u32 = u32::MAX;

/// One thread of the program, or a VP's idle context.
#[derive(Debug)]
pub struct Thread {
    saved_rsp: AtomicU64,
    /// Thread id (0 for an idle context).
    pub tid: AtomicU32,
    state: AtomicU32,
    on_cpu: AtomicU32,
    /// The VP it runs on or last ran on.
    vp: AtomicU32,
    /// Base of its pages (0 for an idle context).
    base: AtomicU64,
    fs_base: AtomicU64,
    /// `set_tid_address` / CLONE_CHILD_CLEARTID: zeroed and woken at exit.
    pub clear_child_tid: AtomicU64,
    /// `set_robust_list`.
    pub robust_list: AtomicU64,
    /// The blocked signals (`rt_sigprocmask`).
    pub sigmask: AtomicU64,
    /// The mask to put back at the end of a call that blocks under a mask of its own
    /// (`rt_sigsuspend`, `ppoll`), valid while `restore_sigmask` is 1; a signal frame
    /// pushed meanwhile saves it, so the handler's return puts it back.
    pub saved_sigmask: AtomicU64,
    /// 1 while `saved_sigmask` waits to be put back.
    pub restore_sigmask: AtomicU32,
    /// The VPs it may run on, a bit each (`sched_setaffinity`).
    pub affinity: AtomicU64,
    /// Signals sent to it while blocked (delivered when unblocked).
    pub sigpending: AtomicU64,
    /// The alternate signal stack (`sigaltstack`): base, size, flags.
    pub altstack: [AtomicU64; 3],
    /// Next in its run queue (the queue's lock).
    rq_next: AtomicPtr<Thread>,
    /// Where it goes when it yields, or NO_VP for the VP it yields (a migration); kept
    /// until it runs again, so no VP of another node steals it on the way.
    move_to: AtomicU32,
    /// The VP its next child thread goes to, chosen when the child's stack was mapped
    /// ([`reserve_placement`]), or NO_VP.
    next_child_vp: AtomicU32,
    /// The futex word it waits on (the futex lock; `crate::linux` futexes).
    pub futex_addr: AtomicU64,
    /// FUTEX_WAIT_BITSET's bits (the futex lock).
    pub futex_bitset: AtomicU32,
    /// 1 while in the futex wait list (the futex lock).
    pub futex_queued: AtomicU32,
    /// Next in the futex wait list (the futex lock).
    pub futex_next: AtomicPtr<Thread>,
    /// The VP whose timer list holds it, or NO_VP (that VP's timer lock).
    timer_vp: AtomicU32,
    /// Its deadline, in TSC ticks (that VP's timer lock).
    deadline: AtomicU64,
    /// Next in the timer list (that VP's timer lock).
    timer_next: AtomicPtr<Thread>,
    /// TSC ticks it ran before its current run.
    cpu_ticks: AtomicU64,
    /// TSC when its current run began.
    run_start: AtomicU64,
    /// Remote faults it took, by home node (written by the VP it runs on).
    weights: placement::Weights,
}

impl Thread {
    /// True when its affinity allows VP `vp`.
    pub fn may_run_on(&self, vp: u32) -> bool {
        self.affinity.load(Ordering::Relaxed) & (1u64 << (vp % 64)) != 0
    }

    const fn idle() -> Self {
        Self {
            saved_rsp: AtomicU64::new(0),
            tid: AtomicU32::new(0),
            state: AtomicU32::new(RUNNING),
            on_cpu: AtomicU32::new(1),
            vp: AtomicU32::new(NO_VP),
            base: AtomicU64::new(0),
            fs_base: AtomicU64::new(0),
            clear_child_tid: AtomicU64::new(0),
            robust_list: AtomicU64::new(0),
            sigmask: AtomicU64::new(0),
            saved_sigmask: AtomicU64::new(0),
            restore_sigmask: AtomicU32::new(0),
            affinity: AtomicU64::new(u64::MAX),
            sigpending: AtomicU64::new(0),
            altstack: [
                AtomicU64::new(0),
                AtomicU64::new(0),
                AtomicU64::new(guest::linux_abi::signal::SS_DISABLE),
            ],
            rq_next: AtomicPtr::new(null_mut()),
            move_to: AtomicU32::new(NO_VP),
            next_child_vp: AtomicU32::new(NO_VP),
            futex_addr: AtomicU64::new(0),
            futex_bitset: AtomicU32::new(0),
            futex_queued: AtomicU32::new(0),
            futex_next: AtomicPtr::new(null_mut()),
            timer_vp: AtomicU32::new(NO_VP),
            deadline: AtomicU64::new(0),
            timer_next: AtomicPtr::new(null_mut()),
            cpu_ticks: AtomicU64::new(0),
            run_start: AtomicU64::new(0),
            weights: placement::Weights::new(),
        }
    }

    fn is_idle(&self) -> bool {
        self.base.load(Ordering::Relaxed) == 0
    }

    fn kernel_stack_top(&self) -> u64 {
        self.base.load(Ordering::Relaxed) + THREAD_PAGES * PAGE_SIZE
    }

    /// The thread's id.
    pub fn id(&self) -> u32 {
        self.tid.load(Ordering::Relaxed)
    }
}

/// A VP's run queue, timer list and idle context, on a page of its own.
#[derive(Debug)]
pub struct RunQueue {
    lock: RawSpinLock,
    head: AtomicPtr<Thread>,
    tail: AtomicPtr<Thread>,
    len: AtomicU64,
    /// Bumped by every enqueue: the idle VP waits on it.
    kick: AtomicU64,
    /// 1 while a program thread runs here.
    busy: AtomicU32,
    /// 1 while the VP waits in the VMM for work.
    waiting: AtomicU32,
    /// Set by an interrupt that could not switch (it hit the kernel).
    resched: AtomicU32,
    /// Set by the configuration interrupt until the idle context applied it.
    config_pending: AtomicU32,
    /// 1 while the VP is offline: enqueues go elsewhere (the queue's lock).
    offline: AtomicU32,
    timer_lock: RawSpinLock,
    timers: AtomicPtr<Thread>,
    /// The VP's last reading of its remote-fault counts.
    faults_seen: placement::FaultReading,
    idle: Thread,
}

impl RunQueue {
    const fn new() -> Self {
        Self {
            lock: RawSpinLock::new(),
            head: AtomicPtr::new(null_mut()),
            tail: AtomicPtr::new(null_mut()),
            len: AtomicU64::new(0),
            kick: AtomicU64::new(0),
            busy: AtomicU32::new(0),
            waiting: AtomicU32::new(0),
            resched: AtomicU32::new(0),
            config_pending: AtomicU32::new(0),
            offline: AtomicU32::new(0),
            timer_lock: RawSpinLock::new(),
            timers: AtomicPtr::new(null_mut()),
            faults_seen: placement::FaultReading::new(),
            idle: Thread::idle(),
        }
    }

    /// Runnable plus running threads: the VP's load.
    fn load(&self) -> u64 {
        self.len.load(Ordering::Relaxed) + u64::from(self.busy.load(Ordering::Relaxed))
    }
}

static QUEUES: [PageAligned<RunQueue>; MAX_VPS] = [const { PageAligned(RunQueue::new()) }; MAX_VPS];

/// Program threads alive.
static LIVE: PageAligned<AtomicU64> = PageAligned(AtomicU64::new(0));
/// Most program threads alive at once.
pub const MAX_THREADS: usize = 1024;
/// Every live program thread, so a thread id finds its thread (tgkill).
static THREADS: crate::spinlock::SpinLock<[usize; MAX_THREADS]> =
    crate::spinlock::SpinLock::new([0; MAX_THREADS]);
/// TSC ticks every program thread ran, up to its last switch out.
static PROGRAM_TICKS: PageAligned<AtomicU64> = PageAligned(AtomicU64::new(0));
/// The next thread id (the main thread is 1, the process id).
static NEXT_TID: PageAligned<AtomicU32> = PageAligned(AtomicU32::new(1));
/// Where the last placement looked first, so ties spread round the VPs.
static PLACE_CURSOR: AtomicU32 = AtomicU32::new(0);

fn queue(vp: u32) -> &'static RunQueue {
    &QUEUES[vp as usize % MAX_VPS].0
}

fn vp_count() -> u32 {
    u32::try_from(kernel().vp_count()).unwrap_or(1)
}

/// The thread running on this VP.
pub fn current() -> &'static Thread {
    let ptr: u64;
    // SAFETY: gs points at this VP's VpShared block; guest word 3 is the kernel's and
    // holds a thread pointer once the idle loop or a thread runs (0 before).
    unsafe {
        core::arch::asm!(
            "mov {p}, qword ptr gs:[{off}]",
            p = out(reg) ptr,
            off = const CURRENT_OFFSET,
            options(nostack, readonly, preserves_flags)
        );
    }
    if ptr == 0 {
        return &queue(current_vp()).idle;
    }
    // SAFETY: only `set_current` writes the word, with a thread that stays allocated
    // while it runs here.
    unsafe { &*(ptr as *const Thread) }
}

fn set_current(thread: &Thread) {
    let ptr = core::ptr::from_ref(thread) as u64;
    let top = thread.kernel_stack_top();
    // SAFETY: gs points at this VP's VpShared block; guest words 1 and 3 are the
    // kernel's. The system call entry reads word 1 only while this thread runs.
    unsafe {
        core::arch::asm!(
            "mov qword ptr gs:[{cur}], {p}",
            cur = const CURRENT_OFFSET,
            p = in(reg) ptr,
            options(nostack, preserves_flags)
        );
        if !thread.is_idle() {
            core::arch::asm!(
                "mov qword ptr gs:[{ks}], {top}",
                ks = const KERNEL_RSP_OFFSET,
                top = in(reg) top,
                options(nostack, preserves_flags)
            );
        }
    }
}

fn read_fs_base() -> u64 {
    let base: u64;
    // SAFETY: rdfsbase only reads the fs base (native at CPL3, docs/platform.md).
    unsafe { core::arch::asm!("rdfsbase {}", out(reg) base, options(nostack, preserves_flags)) };
    base
}

fn write_fs_base(base: u64) {
    // SAFETY: wrfsbase only changes the fs base, which the kernel never uses; the value
    // came from rdfsbase or was checked canonical by arch_prctl/clone.
    unsafe { core::arch::asm!("wrfsbase {}", in(reg) base, options(nostack, preserves_flags)) };
}

/// Queues `thread` on `vp`, or on an online VP its affinity allows if `vp` is offline.
fn enqueue(thread: &'static Thread, mut vp: u32) {
    let ptr = core::ptr::from_ref(thread).cast_mut();
    let q = loop {
        let q = queue(vp);
        q.lock.lock();
        if q.offline.load(Ordering::Relaxed) == 0 {
            break q;
        }
        q.lock.unlock();
        let allowed = hotplug::online_within(thread.affinity.load(Ordering::Relaxed));
        if thread.affinity.load(Ordering::Relaxed) & allowed == 0 {
            // Every VP it may run on left: it may run anywhere now (as Linux does).
            thread.affinity.store(u64::MAX, Ordering::Relaxed);
        }
        vp = place_within(allowed);
    };
    thread.vp.store(vp, Ordering::Relaxed);
    thread.rq_next.store(null_mut(), Ordering::Relaxed);
    thread.state.store(RUNNABLE, Ordering::Release);
    let tail = q.tail.load(Ordering::Relaxed);
    if tail.is_null() {
        q.head.store(ptr, Ordering::Relaxed);
    } else {
        // SAFETY: threads in a queue stay allocated (only a DEAD thread is freed, and a
        // dead thread is never queued); the queue lock is held.
        unsafe { (*tail).rq_next.store(ptr, Ordering::Relaxed) };
    }
    q.tail.store(ptr, Ordering::Relaxed);
    q.len.fetch_add(1, Ordering::Relaxed);
    q.lock.unlock();
    q.kick.fetch_add(1, Ordering::SeqCst);
    // A remote write to the kick word's page wakes the VP's wait by itself (the
    // invalidation), a write from its own node does not: an IPI does, for either.
    if vp != current_vp() && q.waiting.load(Ordering::SeqCst) != 0 {
        // Best effort: the wait also ends by its timeout.
        let _ = vima_calls::ipi_send(vp, vima::interrupt::VECTOR_IPI);
    }
}

fn pop(vp: u32) -> Option<&'static Thread> {
    pop_if(vp, |_| true)
}

/// The head of `vp`'s queue, if `accept` takes it.
fn pop_if(vp: u32, accept: impl Fn(&Thread) -> bool) -> Option<&'static Thread> {
    let q = queue(vp);
    if q.len.load(Ordering::Relaxed) == 0 {
        return None;
    }
    q.lock.lock();
    let head = q.head.load(Ordering::Relaxed);
    // SAFETY: as in `enqueue`.
    let thread = if head.is_null() || !accept(unsafe { &*head }) {
        None
    } else {
        // SAFETY: as in `enqueue`.
        let thread = unsafe { &*head };
        let next = thread.rq_next.load(Ordering::Relaxed);
        q.head.store(next, Ordering::Relaxed);
        if next.is_null() {
            q.tail.store(null_mut(), Ordering::Relaxed);
        }
        q.len.fetch_sub(1, Ordering::Relaxed);
        Some(thread)
    };
    q.lock.unlock();
    thread
}

/// A runnable thread of another VP, from this node's VPs first, never one on its way to a
/// VP of another node (`move_to`). From another node only
/// a thread that the move is worth it for: with memory weighting, one whose remote
/// faults would cost more on this node than its wait there (`guest::placement`).
fn steal(vp: u32) -> Option<&'static Thread> {
    let k = kernel();
    let count = vp_count();
    let node = k.node_of(vp as usize);
    let weighted = placement::memory_weighted();
    let nodes = placement::node_count();
    for same_node in [true, false] {
        for other in (1..count).map(|i| (vp + i) % count) {
            let from = k.node_of(other as usize);
            if (from == node) != same_node {
                continue;
            }
            let waiting = queue(other).load();
            let accept = |t: &Thread| {
                let moving_to = t.move_to.load(Ordering::Relaxed);
                t.may_run_on(vp)
                    && (moving_to == NO_VP || k.node_of(moving_to as usize) == node)
                    && (same_node
                        || !weighted
                        || guest::placement::worth_stealing(
                            &t.weights.get()[..nodes],
                            from,
                            node,
                            waiting,
                        ))
            };
            if let Some(thread) = pop_if(other, accept) {
                return Some(thread);
            }
        }
    }
    None
}

/// The VP a new thread of the caller starts on: the least loaded of those the caller's
/// affinity allows (a child inherits it), ties going round the VPs.
pub fn place() -> u32 {
    place_within(current().affinity.load(Ordering::Relaxed))
}

/// The least loaded online VP of `mask` (any online VP if the mask names none).
fn place_within(mask: u64) -> u32 {
    let count = vp_count();
    let start = PLACE_CURSOR.fetch_add(1, Ordering::Relaxed) % count;
    let mask = hotplug::online_within(mask);
    let allowed = |vp: u32| mask & (1u64 << (vp % 64)) != 0;
    let mut best: Option<u32> = None;
    for vp in (0..count)
        .map(|i| (start + i) % count)
        .filter(|&vp| allowed(vp))
    {
        if best.is_none_or(|b| queue(vp).load() < queue(b).load()) {
            best = Some(vp);
        }
    }
    best.unwrap_or(start)
}

/// Restricts the calling thread to the VPs of `mask` (already checked to name one) and
/// moves it if it runs elsewhere.
pub fn set_own_affinity(mask: u64) {
    let me = current();
    me.affinity.store(mask, Ordering::Relaxed);
    if !me.may_run_on(current_vp()) {
        move_to_vp(place_within(mask));
    }
}

/// Places the calling thread's next child now (its stack is being mapped, and should
/// come from the memory of the node it will run on); [`spawn`] keeps the choice.
pub fn reserve_placement() -> u32 {
    let vp = place();
    current().next_child_vp.store(vp, Ordering::Relaxed);
    vp
}

/// Makes `thread` run again after a sleep; false if it was not asleep (a wake-up that
/// lost to another, or to its deadline).
pub fn wake(thread: &'static Thread) -> bool {
    if thread
        .state
        .compare_exchange(SLEEPING, WAKING, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        return false;
    }
    while thread.on_cpu.load(Ordering::Acquire) != 0 {
        spin_loop();
    }
    let last = thread.vp.load(Ordering::Relaxed);
    let vp = if !thread.may_run_on(last) {
        place_within(thread.affinity.load(Ordering::Relaxed))
    } else if placement::memory_weighted() {
        wake_target(thread, last)
    } else {
        last
    };
    enqueue(thread, vp);
    true
}

/// Where a woken thread goes with memory weighting: back to its last VP, unless it
/// faulted most on another node's memory and the least loaded VP there costs less
/// (`guest::placement::cost`: load, remote faults, the move).
fn wake_target(thread: &Thread, last: u32) -> u32 {
    let nodes = placement::node_count();
    let weights = thread.weights.get();
    let weights = &weights[..nodes];
    let k = kernel();
    let from = k.node_of(last as usize);
    let Some(preferred) = guest::placement::preferred_node(weights).filter(|&n| n != from) else {
        return last;
    };
    let Some(there) = (0..vp_count())
        .filter(|&v| {
            k.node_of(v as usize) == preferred && thread.may_run_on(v) && hotplug::is_online(v)
        })
        .min_by_key(|&v| queue(v).load())
    else {
        return last;
    };
    let stay = guest::placement::cost(weights, from, from, queue(last).load());
    let go = guest::placement::cost(weights, from, preferred, queue(there).load());
    if go < stay {
        there
    } else {
        last
    }
}

/// Marks the calling thread as going to sleep; the caller then publishes it where a
/// waker finds it and calls [`schedule`].
pub fn prepare_to_sleep() {
    let me = current();
    me.state.store(SLEEPING, Ordering::Release);
}

/// Puts the calling (sleeping) thread on this VP's timer list until `deadline` (TSC).
pub fn arm_deadline(deadline: u64) {
    let me = current();
    let vp = current_vp();
    let q = queue(vp);
    q.timer_lock.lock();
    me.deadline.store(deadline, Ordering::Relaxed);
    me.timer_vp.store(vp, Ordering::Relaxed);
    me.timer_next
        .store(q.timers.load(Ordering::Relaxed), Ordering::Relaxed);
    q.timers
        .store(core::ptr::from_ref(me).cast_mut(), Ordering::Relaxed);
    q.timer_lock.unlock();
}

/// Takes the calling thread off the timer list it is on, if any (after it woke). The
/// list may move while it looks (a VP going offline hands its list on): it looks again.
pub fn disarm_deadline() {
    let me = current();
    loop {
        let vp = me.timer_vp.load(Ordering::Relaxed);
        if vp == NO_VP {
            return;
        }
        let q = queue(vp);
        q.timer_lock.lock();
        let still_there = me.timer_vp.load(Ordering::Relaxed) == vp;
        if still_there {
            unlink_timer(q, me);
        }
        q.timer_lock.unlock();
        if still_there {
            return;
        }
    }
}

/// Removes `thread` from `q`'s timer list; the timer lock is held.
fn unlink_timer(q: &RunQueue, thread: &Thread) {
    let target = core::ptr::from_ref(thread).cast_mut();
    let mut link = &q.timers;
    loop {
        let at = link.load(Ordering::Relaxed);
        if at.is_null() {
            break;
        }
        // SAFETY: threads on a timer list are asleep or about to be, so allocated.
        let node = unsafe { &*at };
        if at == target {
            link.store(node.timer_next.load(Ordering::Relaxed), Ordering::Relaxed);
            break;
        }
        link = &node.timer_next;
    }
    thread.timer_vp.store(NO_VP, Ordering::Relaxed);
}

/// Wakes the threads of this VP's timer list whose deadline passed; returns the
/// earliest deadline still pending (u64::MAX if none).
fn expire_timers(vp: u32) -> u64 {
    let q = queue(vp);
    if q.timers.load(Ordering::Relaxed).is_null() {
        return u64::MAX;
    }
    let now = crate::clock::tsc();
    let me = current();
    let mut earliest = u64::MAX;
    q.timer_lock.lock();
    let mut at = q.timers.load(Ordering::Relaxed);
    while !at.is_null() {
        // SAFETY: as in `unlink_timer`.
        let thread: &'static Thread = unsafe { &*at };
        at = thread.timer_next.load(Ordering::Relaxed);
        let deadline = thread.deadline.load(Ordering::Relaxed);
        if deadline > now {
            earliest = earliest.min(deadline);
            continue;
        }
        unlink_timer(q, thread);
        if core::ptr::eq(thread, me) {
            // Its deadline passed before it left the VP: it just goes on.
            let _ = thread.state.compare_exchange(
                SLEEPING,
                RUNNING,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        } else {
            // Off its VP (or leaving it): `wake` waits at most for that switch.
            wake(thread);
        }
    }
    q.timer_lock.unlock();
    earliest
}

/// Gives the VP to another thread: the calling thread is RUNNING (a yield: it keeps the
/// VP if nobody else wants it), SLEEPING or DEAD.
pub fn schedule() {
    let me = current();
    let vp = current_vp();
    let q = queue(vp);
    q.resched.store(0, Ordering::Relaxed);
    expire_timers(vp);
    let running = me.state.load(Ordering::Acquire) == RUNNING;
    if running && !me.is_idle() && hotplug::config_pending(vp) {
        // The idle context applies the configuration; this thread waits in the queue
        // (and goes to another VP if this one leaves).
        me.state.store(YIELDED, Ordering::Release);
        switch(me, &q.idle);
        return;
    }
    let next = if running {
        pop(vp)
    } else {
        pop(vp).or_else(|| steal(vp))
    };
    match next {
        Some(next) => {
            if running {
                me.state.store(YIELDED, Ordering::Release);
            }
            switch(me, next);
        }
        None if running => {}
        None => switch(me, &q.idle),
    }
}

/// Moves the calling thread to a VP of `node` (the least loaded) unless it runs on one;
/// returns once it runs there.
pub fn move_to_node(node: u32) {
    let k = kernel();
    // Stealing leaves a moving thread to its target's node (`move_to`); going again until
    // it runs on `node` keeps the promise whatever the scheduler does (its callers need
    // that node's VMM).
    while k.node_of(current_vp() as usize) != node {
        let Some(target) = (0..vp_count())
            .filter(|&v| k.node_of(v as usize) == node && hotplug::is_online(v))
            .min_by_key(|&v| queue(v).load())
        else {
            return;
        };
        move_to_vp(target);
    }
}

/// Moves the calling thread to VP `target`; returns once it runs there.
pub fn move_to_vp(target: u32) {
    let vp = current_vp();
    if target == vp {
        return;
    }
    let me = current();
    let q = queue(vp);
    me.move_to.store(target, Ordering::Relaxed);
    me.state.store(YIELDED, Ordering::Release);
    let next = pop(vp).unwrap_or(&q.idle);
    switch(me, next);
}

/// Takes back a [`prepare_to_sleep`] of the calling thread (it found a reason not to
/// sleep), unless a waker already won it: then the waker queues it once it is off the
/// VP, so it goes through the scheduler.
pub fn cancel_sleep() {
    let me = current();
    if me
        .state
        .compare_exchange(SLEEPING, RUNNING, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        schedule();
    }
}

/// Sleeps the calling thread until `deadline` (TSC), or longer if woken late, but ends
/// early once `interrupted` holds (a signal came): true if the deadline passed, false if
/// interrupted. `interrupted` is looked at after
/// the thread is marked SLEEPING, so a sender that sets its condition and then wakes the
/// thread is never missed: either it sees SLEEPING and wakes it, or this sees the
/// condition.
pub fn sleep_until_unless(deadline: u64, interrupted: impl Fn() -> bool) -> bool {
    while crate::clock::tsc() < deadline {
        prepare_to_sleep();
        core::sync::atomic::fence(Ordering::SeqCst);
        if interrupted() {
            cancel_sleep();
            return false;
        }
        arm_deadline(deadline);
        schedule();
        disarm_deadline();
    }
    true
}

/// Gives the VP away if the interrupt that calls this hit program code and another
/// thread is waiting; otherwise asks the system call exit to look again.
pub fn preempt_from_interrupt(interrupted_rip: u64) {
    let q = queue(current_vp());
    if current().is_idle() {
        return;
    }
    let kernel_text = crate::alloc::image_start()..crate::alloc::image_end();
    if kernel_text.contains(&interrupted_rip) {
        q.resched.store(1, Ordering::Relaxed);
        return;
    }
    let timers_due = !q.timers.load(Ordering::Relaxed).is_null();
    if q.len.load(Ordering::Relaxed) != 0 || timers_due || hotplug::config_pending(current_vp()) {
        schedule();
    }
}

/// True when this VP runs its idle context (no program thread).
pub fn current_is_idle() -> bool {
    current().is_idle()
}

/// At a system call's exit: switches if an interrupt asked for it.
pub fn resched_point() {
    if queue(current_vp()).resched.load(Ordering::Relaxed) != 0 {
        schedule();
    }
}

fn switch(prev: &'static Thread, next: &'static Thread) {
    let vp = current_vp();
    let mask = interrupts::mask();
    if placement::memory_weighted() {
        let ran = (!prev.is_idle()).then_some(&prev.weights);
        placement::account(vp, &queue(vp).faults_seen, ran);
    }
    let now = crate::clock::tsc();
    if !prev.is_idle() {
        let ran = now.saturating_sub(prev.run_start.load(Ordering::Relaxed));
        prev.cpu_ticks.fetch_add(ran, Ordering::Relaxed);
        PROGRAM_TICKS.fetch_add(ran, Ordering::Relaxed);
    }
    next.run_start.store(now, Ordering::Relaxed);
    next.move_to.store(NO_VP, Ordering::Relaxed);
    prev.fs_base.store(read_fs_base(), Ordering::Relaxed);
    next.state.store(RUNNING, Ordering::Relaxed);
    next.on_cpu.store(1, Ordering::Relaxed);
    next.vp.store(vp, Ordering::Relaxed);
    set_current(next);
    write_fs_base(next.fs_base.load(Ordering::Relaxed));
    queue(vp)
        .busy
        .store(u32::from(!next.is_idle()), Ordering::Relaxed);
    // SAFETY: `next` is off every VP (it came from a run queue or is this VP's idle
    // context, which nothing else runs) and its saved rsp came from a switch or from
    // `build_initial_stack`; `prev` is this VP's current thread.
    let from = unsafe {
        switch::switch_to(
            prev.saved_rsp.as_ptr(),
            next.saved_rsp.load(Ordering::Relaxed),
            core::ptr::from_ref(prev) as u64,
        )
    };
    finish_switch(from as *const Thread);
    interrupts::restore(mask);
}

/// Run by the thread that switched in, once nothing runs on `prev`'s stack any more.
fn finish_switch(prev: *const Thread) {
    // SAFETY: `prev` is the thread that switched here; it is allocated until this
    // function frees it.
    let prev: &'static Thread = unsafe { &*prev };
    let state = prev.state.load(Ordering::Acquire);
    prev.on_cpu.store(0, Ordering::Release);
    match state {
        YIELDED => {
            let to = prev.move_to.load(Ordering::Relaxed);
            enqueue(prev, if to == NO_VP { current_vp() } else { to });
        }
        DEAD => {
            let base = prev.base.load(Ordering::Relaxed);
            // Best effort: a failure only leaks the pages.
            let _ = alloc::free_pages(base, THREAD_PAGES);
        }
        _ => {}
    }
}

/// A new thread's first instructions in the kernel (from `sched_thread_first_run`).
extern "sysv64" fn first_run(prev: u64) {
    finish_switch(prev as *const Thread);
    interrupts::restore(0);
}

/// Why a thread could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// No memory for its kernel stack.
    #[error("no memory for a thread: {0}")]
    Memory(#[from] guest::page_alloc::PageAllocError),
    /// MAX_THREADS threads are alive.
    #[error("too many threads")]
    TooMany,
}

/// Makes a thread that enters the program with `frame`'s registers, `fx`'s SSE state
/// and `fs_base`, for VP `on` or the one [`place`] picks; returns it (not yet running:
/// the caller may set its fields before [`start`]).
pub fn spawn(
    frame: &SyscallFrame,
    fx: &[u8; switch::FX_BYTES],
    fs_base: u64,
    on: Option<u32>,
) -> Result<&'static Thread, SpawnError> {
    let reserved = current().next_child_vp.swap(NO_VP, Ordering::Relaxed);
    let vp = on.unwrap_or(if reserved != NO_VP && reserved < vp_count() {
        reserved
    } else {
        place()
    });
    let node = kernel().node_of(vp as usize);
    let base = alloc::alloc_pages(THREAD_PAGES, node)?;
    let ptr = base as *mut Thread;
    let tid = NEXT_TID.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the allocator gave these pages to this thread alone; the header page holds
    // the Thread, the rest is its kernel stack.
    let thread: &'static Thread = unsafe {
        ptr.write(Thread::idle());
        &*ptr
    };
    thread.tid.store(tid, Ordering::Relaxed);
    thread.base.store(base, Ordering::Relaxed);
    thread.affinity.store(
        current().affinity.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    thread.fs_base.store(fs_base, Ordering::Relaxed);
    thread.on_cpu.store(0, Ordering::Relaxed);
    thread.vp.store(vp, Ordering::Relaxed);
    thread.state.store(SLEEPING, Ordering::Relaxed);
    // SAFETY: the stack top is page aligned and the stack is the new thread's.
    let rsp = unsafe { switch::build_initial_stack(thread.kernel_stack_top(), frame, fx) };
    thread.saved_rsp.store(rsp, Ordering::Relaxed);
    {
        let mut threads = THREADS.lock();
        match threads.iter_mut().find(|slot| **slot == 0) {
            Some(slot) => *slot = core::ptr::from_ref(thread) as usize,
            None => {
                drop(threads);
                let _ = alloc::free_pages(base, THREAD_PAGES);
                return Err(SpawnError::TooMany);
            }
        }
    }
    LIVE.fetch_add(1, Ordering::Relaxed);
    Ok(thread)
}

/// Queues a thread [`spawn`] made.
pub fn start(thread: &'static Thread) {
    enqueue(thread, thread.vp.load(Ordering::Relaxed));
}

/// Runs `f` on the live thread with id `tid` (None if there is none), with the thread
/// table locked so the thread cannot go away meanwhile.
pub fn with_thread<R>(tid: u32, f: impl FnOnce(&'static Thread) -> R) -> Option<R> {
    let threads = THREADS.lock();
    let found = threads.iter().filter(|&&p| p != 0).find_map(|&p| {
        // SAFETY: a registered pointer is a live thread's header; exit_thread removes it
        // under this lock before the thread can be freed.
        let thread: &'static Thread = unsafe { &*(p as *const Thread) };
        (thread.id() == tid).then_some(thread)
    });
    found.map(f)
}

/// Makes a thread that sleeps come back to look at a signal sent to it; a running one
/// gets an IPI on its VP (it looks when it next returns to the program).
pub fn interrupt_thread(thread: &'static Thread) {
    if wake(thread) {
        return;
    }
    let vp = thread.vp.load(Ordering::Relaxed);
    if vp != current_vp() && thread.on_cpu.load(Ordering::Relaxed) != 0 {
        let _ = vima_calls::ipi_send(vp, vima::interrupt::VECTOR_IPI);
    }
}

/// CPU time of the calling thread, in TSC ticks (CLOCK_THREAD_CPUTIME_ID).
pub fn thread_cpu_ticks() -> u64 {
    let me = current();
    let running = crate::clock::tsc().saturating_sub(me.run_start.load(Ordering::Relaxed));
    me.cpu_ticks.load(Ordering::Relaxed) + running
}

/// CPU time of the whole program, in TSC ticks (CLOCK_PROCESS_CPUTIME_ID): every
/// thread's time up to its last switch, plus the caller's current run (other threads'
/// current runs are not seen until they switch: at most a tick each).
pub fn program_cpu_ticks() -> u64 {
    let me = current();
    let running = crate::clock::tsc().saturating_sub(me.run_start.load(Ordering::Relaxed));
    PROGRAM_TICKS.load(Ordering::Relaxed) + running
}

/// Ends the calling thread; returns the program threads still alive (the caller ends
/// the program when none is). Does not return if others remain.
pub fn exit_thread() -> u64 {
    {
        let me = core::ptr::from_ref(current()) as usize;
        let mut threads = THREADS.lock();
        if let Some(slot) = threads.iter_mut().find(|slot| **slot == me) {
            *slot = 0;
        }
    }
    let left = LIVE.fetch_sub(1, Ordering::AcqRel) - 1;
    if left == 0 {
        return 0;
    }
    current().state.store(DEAD, Ordering::Release);
    schedule();
    crate::machine::fail(1, format_args!("a dead thread ran again"))
}

/// The VP's scheduler loop: runs queued threads, steals, and otherwise waits in the VMM
/// until a thread is queued here or the earliest deadline of this VP's sleepers.
pub fn idle_loop() -> ! {
    let vp = current_vp();
    let q = queue(vp);
    set_current(&q.idle);
    if !kernel().is_first_on_node(vp as usize) {
        // The first VP of each node already ticks (it also advances the node's tick).
        if let Err(err) = interrupts::start_node_tick() {
            crate::machine::fail(1, format_args!("VP {vp}: {err}"));
        }
    }
    loop {
        if hotplug::config_pending(vp) {
            hotplug::apply(vp);
        }
        let earliest = expire_timers(vp);
        if let Some(next) = pop(vp).or_else(|| steal(vp)) {
            switch(&q.idle, next);
            continue;
        }
        let kick = q.kick.load(Ordering::SeqCst);
        q.waiting.store(1, Ordering::SeqCst);
        let now = crate::clock::tsc();
        let wait = crate::clock::tsc_to_ns(earliest.saturating_sub(now)).min(interrupts::TICK_NS);
        // An enqueuer either sees `waiting` and sends an IPI, or changed `kick` before
        // this read of the queue, so the wait returns at once.
        if q.len.load(Ordering::SeqCst) == 0 && wait != 0 {
            if let Err(err) = vima_calls::spin_wait(&q.kick, kick, wait) {
                crate::machine::fail(1, format_args!("VP {vp}: {err}"));
            }
        }
        q.waiting.store(0, Ordering::Relaxed);
    }
}
