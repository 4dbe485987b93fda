//! The kernel's shared view of the machine: the configuration and workload VP 0
//! publishes before it starts the other VPs ([`kernel`]), and the way every part of the
//! kernel gives up ([`fail`]). The core modules (smp, sched, interrupts, spinlock) depend
//! on this, not on boot.

use core::fmt;

use vima::config::Config;

use guest::cmdline::Workload;

use crate::sync::Once;
use crate::vima_calls;

/// What every VP knows about the virtual server, set by VP 0 before it starts the others.
#[derive(Debug)]
pub struct Kernel {
    /// The configuration.
    pub config: Config<'static>,
    /// The workload of the command line.
    pub workload: Workload,
}

impl Kernel {
    /// Number of VPs.
    pub fn vp_count(&self) -> usize {
        self.config.vp_count()
    }

    /// The node VP `vp` runs on.
    pub fn node_of(&self, vp: usize) -> u32 {
        self.config.vp(vp).map_or(0, |desc| desc.node_id)
    }

    /// True when no VP below `vp` runs on `vp`'s node.
    pub fn is_first_on_node(&self, vp: usize) -> bool {
        let node = self.node_of(vp);
        self.config.vps().take(vp).all(|desc| desc.node_id != node)
    }
}

static KERNEL: Once<Kernel> = Once::new();

/// The kernel's shared state; VPs other than VP 0 run only after it is set.
pub fn kernel() -> &'static Kernel {
    match KERNEL.get() {
        Some(kernel) => kernel,
        None => fail(1, format_args!("kernel state used before boot set it")),
    }
}

/// Publishes the kernel's state (VP 0, once, before it starts the others).
pub fn set(kernel: Kernel) -> Result<(), Kernel> {
    KERNEL.set(kernel).map(|_| ())
}

/// Prints `error: <message>` and ends the virtual server with `status`.
pub fn fail(status: u64, message: fmt::Arguments<'_>) -> ! {
    println!("error: {message}");
    crate::console::flush();
    vima_calls::vs_exit(status)
}
