//! Round trips between a guest VP and the VMM, on real KVM:
//! - `vima_call`: one `IntrPoll` call (`out` exit, dispatch, registers back, re-entry);
//! - `local_fault`: a guest read of a page the VMM dropped with MADV_DONTNEED (MINOR
//!   userfaultfd fault, UFFDIO_CONTINUE, resume), followed by the same call; subtract
//!   `vima_call` for the fault alone.
//!
//! The guest is hand-written machine code, so nothing but the round trip is measured.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use host_vmm::boot::elf::GuestImage;
use host_vmm::devices::console::StdoutSink;
use host_vmm::node::{Node, NodeConfig};
use host_vmm::vp::calls::{dispatch, CallOutcome};
use host_vmm::vp::VpLocal;
use kvm_ioctls::VcpuExit;

const PROBE_PAGE: u64 = 0x40_0000;

/// `loop: mov eax, 11; out 0xCA, al; jmp loop`
const CALL_LOOP: &[u8] = &[0xb8, 0x0b, 0, 0, 0, 0xe6, 0xca, 0xeb, 0xf7];
/// `loop: mov rax, [0x400000]; mov eax, 11; out 0xCA, al; jmp loop`
const FAULT_LOOP: &[u8] = &[
    0x48, 0x8b, 0x04, 0x25, 0x00, 0x00, 0x40, 0x00, 0xb8, 0x0b, 0, 0, 0, 0xe6, 0xca, 0xeb, 0xef,
];

fn node_for(code: &'static [u8]) -> Node {
    let cfg = NodeConfig {
        node_id: 0,
        nodes: 1,
        vps_per_node: 1,
        mem_mib_per_node: 16,
        cmdline: String::new(),
    };
    Node::create(
        &cfg,
        &GuestImage::raw(code),
        Box::new(StdoutSink { tag_node: false }),
    )
    .expect("benchmarks need /dev/kvm and /dev/userfaultfd")
}

fn bench(c: &mut Criterion, name: &str, code: &'static [u8], drop_page: bool) {
    let mut node = node_for(code);
    let server = node.server.clone();
    let handler = server.memory.spawn_fault_handler().expect("fault handler");
    let (vp, mut vcpu) = node.vcpus.remove(0);
    let control = server.vp(vp).expect("vp 0").clone();
    host_vmm::vp::set_entry_state(
        &server,
        &vcpu,
        &control,
        vima::layout::GUEST_IMAGE_BASE,
        vima::layout::BOOT_STACK_TOP,
        0,
    )
    .expect("entry state");
    let mut local = VpLocal::default();
    let page = PROBE_PAGE / vima::layout::PAGE_SIZE;
    let mut round_trip = |vcpu: &mut kvm_ioctls::VcpuFd| loop {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(0xca, _)) => {
                let mut regs = vcpu.get_regs().expect("get_regs");
                assert_eq!(
                    dispatch(&server, &control, &mut local, &mut regs),
                    CallOutcome::Resume
                );
                vcpu.set_regs(&regs).expect("set_regs");
                return;
            }
            Ok(other) => panic!("unexpected exit {other:?}"),
            Err(e) if e.errno() == libc::EINTR => {}
            Err(e) => panic!("KVM_RUN failed: {e}"),
        }
    };
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                if drop_page {
                    server.memory.drop_page(page).expect("page in range");
                }
                let start = Instant::now();
                round_trip(&mut vcpu);
                total += start.elapsed();
            }
            total
        })
    });
    drop(handler);
}

fn vima_call(c: &mut Criterion) {
    bench(c, "vima_call", CALL_LOOP, false);
}

fn local_fault(c: &mut Criterion) {
    bench(c, "local_fault_plus_call", FAULT_LOOP, true);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = vima_call, local_fault
}
criterion_main!(benches);
