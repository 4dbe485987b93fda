//! The VMM against hand-assembled guests: call argument checking, console, exit status,
//! guest faults. These need /dev/kvm and /dev/userfaultfd (present on the build machines).
#![allow(clippy::cast_possible_truncation)] // test addresses and counts are small

use host_vmm::boot::elf::GuestImage;
use host_vmm::devices::console::ConsoleSink;
use host_vmm::node::{Node, NodeConfig};
use host_vmm::server::Outcome;
use std::sync::{Arc, Mutex};
use vima::call::{Call, UncheckedRange};
use vima::layout::GUEST_IMAGE_BASE;
use vima::Status;

/// A few x86-64 instructions, encoded by hand.
#[derive(Default)]
struct Asm(Vec<u8>);

#[derive(Clone, Copy)]
enum Reg {
    Rax,
    Rdx,
    Rsi,
    Rdi,
    R8,
    R10,
}

impl Asm {
    fn mov(&mut self, reg: Reg, imm: u64) -> &mut Self {
        let (rex, op) = match reg {
            Reg::Rax => (0x48, 0xb8),
            Reg::Rdx => (0x48, 0xba),
            Reg::Rsi => (0x48, 0xbe),
            Reg::Rdi => (0x48, 0xbf),
            Reg::R8 => (0x49, 0xb8),
            Reg::R10 => (0x49, 0xba),
        };
        self.0.extend_from_slice(&[rex, op]);
        self.0.extend_from_slice(&imm.to_le_bytes());
        self
    }
    /// `out 0xCA, al`: a ViMA call.
    fn call(&mut self) -> &mut Self {
        self.0.extend_from_slice(&[0xe6, 0xca]);
        self
    }
    /// `mov [addr], rax` (addr below 2 GiB).
    fn store_rax(&mut self, addr: u32) -> &mut Self {
        self.0.extend_from_slice(&[0x48, 0x89, 0x04, 0x25]);
        self.0.extend_from_slice(&addr.to_le_bytes());
        self
    }
    /// `mov rax, [addr]`.
    fn load_rax(&mut self, addr: u32) -> &mut Self {
        self.0.extend_from_slice(&[0x48, 0x8b, 0x04, 0x25]);
        self.0.extend_from_slice(&addr.to_le_bytes());
        self
    }
    fn hlt(&mut self) -> &mut Self {
        self.0.push(0xf4);
        self
    }
    /// A call with up to five arguments.
    fn vima(&mut self, call: u64, args: &[u64]) -> &mut Self {
        self.mov(Reg::Rax, call);
        for (reg, value) in [Reg::Rdi, Reg::Rsi, Reg::Rdx, Reg::R10, Reg::R8]
            .iter()
            .zip(args)
        {
            self.mov(*reg, *value);
        }
        self.call()
    }
}

#[derive(Debug, Clone, Default)]
struct Collect(Arc<Mutex<Vec<String>>>);
impl ConsoleSink for Collect {
    fn line(&self, _vp: u32, _node: u32, line: &str) {
        self.0.lock().unwrap().push(line.to_string());
    }
}

const MEM_MIB: u64 = 16;
const DATA: u64 = GUEST_IMAGE_BASE + 0x1000;
const RESULTS: u64 = GUEST_IMAGE_BASE + 0x2000;

fn run(code: &[u8], data: &[u8]) -> (Outcome, host_vmm::node::NodeReport, Vec<u64>) {
    let mut image = code.to_vec();
    image.resize(0x1000, 0x90);
    image.extend_from_slice(data);
    image.resize(0x3000, 0);
    let cfg = NodeConfig {
        node_id: 0,
        nodes: 1,
        vps_per_node: 1,
        mem_mib_per_node: MEM_MIB,
        cmdline: "raw".into(),
    };
    let sink = Collect::default();
    let node = Node::create(&cfg, &GuestImage::raw(&image), Box::new(sink)).expect("node");
    let server = node.server.clone();
    let report = node.run().expect("run");
    let range = UncheckedRange::new(RESULTS, 16 * 8)
        .check(server.logical_bytes, 8)
        .unwrap();
    let mut bytes = vec![0u8; 128];
    server.memory.read(range, &mut bytes).unwrap();
    let results = bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (report.outcome.clone(), report, results)
}

#[test]
fn bad_call_arguments_return_errors_and_are_counted() {
    let mem = MEM_MIB << 20;
    let cases: Vec<(u64, Vec<u64>, Status)> = vec![
        (99, vec![], Status::UnknownCall),
        (u64::MAX, vec![], Status::UnknownCall),
        (Call::ConsoleWrite as u64, vec![0, 4], Status::BadAddress),
        (
            Call::ConsoleWrite as u64,
            vec![DATA, 5000],
            Status::BadArgument,
        ),
        (
            Call::ConsoleWrite as u64,
            vec![mem - 1, 2],
            Status::BadAddress,
        ),
        (Call::IpiSend as u64, vec![7, 40], Status::BadVp),
        (Call::IpiSend as u64, vec![0, 5], Status::BadArgument),
        (
            Call::VpStart as u64,
            vec![0, GUEST_IMAGE_BASE, 0x1f_0000, 0],
            Status::VpBusy,
        ),
        (
            Call::VpStart as u64,
            vec![3, GUEST_IMAGE_BASE, 0x1f_0000, 0],
            Status::BadVp,
        ),
        (
            Call::SpinWait as u64,
            vec![DATA + 4, 0, 1000],
            Status::BadAddress,
        ),
        (
            Call::IdtRegister as u64,
            vec![DATA, 65],
            Status::BadArgument,
        ),
        (
            Call::ConfigRead as u64,
            vec![mem + 4096, 16],
            Status::BadAddress,
        ),
        (Call::TimerSet as u64, vec![3, 1000, 0], Status::BadArgument),
        (Call::SelfInfo as u64, vec![], Status::Ok),
    ];
    let mut asm = Asm::default();
    for (i, (call, args, _)) in cases.iter().enumerate() {
        asm.vima(*call, args)
            .store_rax(u32::try_from(RESULTS).unwrap() + 8 * i as u32);
    }
    asm.vima(Call::ConsoleWrite as u64, &[DATA, 3]);
    asm.vima(Call::VsExit as u64, &[0x1_2a]);
    let (outcome, report, results) = run(&asm.0, b"hi\n");
    assert_eq!(outcome, Outcome::Exited(0x1_2a));
    assert_eq!(outcome.exit_code(), 0x2a);
    for (i, (call, _, want)) in cases.iter().enumerate() {
        assert_eq!(results[i], *want as u64, "case {i}: call {call}");
    }
    assert_eq!(report.console, vec!["hi".to_string()]);
    assert_eq!(report.counters.vmm.unknown_calls, 2);
    assert_eq!(report.counters.vmm.bad_calls, cases.len() as u64 - 3);
}

#[test]
fn config_read_returns_the_table() {
    let mut asm = Asm::default();
    asm.vima(Call::ConfigRead as u64, &[DATA, 0])
        .store_rax(RESULTS as u32);
    asm.mov(Reg::Rax, 0).mov(Reg::Rdx, 0);
    // rdx holds the size after the first call; read the whole table into DATA.
    asm.vima(Call::ConfigRead as u64, &[DATA, 4096]);
    asm.vima(Call::VsExit as u64, &[0]);
    let cfg = NodeConfig {
        node_id: 0,
        nodes: 1,
        vps_per_node: 1,
        mem_mib_per_node: MEM_MIB,
        cmdline: "raw".into(),
    };
    let mut image = asm.0.clone();
    image.resize(0x3000, 0x90);
    let node = Node::create(&cfg, &GuestImage::raw(&image), Box::new(Collect::default())).unwrap();
    let server = node.server.clone();
    let report = node.run().unwrap();
    assert_eq!(report.outcome, Outcome::Exited(0));
    let len = server.control.configuration().table().len() as u64;
    let range = UncheckedRange::new(DATA, len)
        .check(server.logical_bytes, 1)
        .unwrap();
    let mut bytes = vec![0u8; len as usize];
    server.memory.read(range, &mut bytes).unwrap();
    let config = vima::config::Config::parse(&bytes).expect("the guest got a valid table");
    assert_eq!(config.cmdline(), b"raw");
    assert_eq!(config.vp_count(), 1);
    assert_eq!(config.header().logical_bytes, MEM_MIB << 20);
}

#[test]
fn hlt_is_a_guest_fault_with_registers() {
    let mut asm = Asm::default();
    asm.mov(Reg::Rsi, 0x1234_5678).hlt();
    let (outcome, _, _) = run(&asm.0, b"");
    match outcome {
        Outcome::GuestFault(fault) => {
            assert_eq!(fault.vp, 0);
            assert!(
                fault.registers.contains("rsi=0x0000000012345678"),
                "{}",
                fault.registers
            );
        }
        other => panic!("expected a guest fault, got {other:?}"),
    }
    assert_eq!(
        Outcome::GuestFault(host_vmm::server::GuestFault {
            vp: 0,
            node: 0,
            what: String::new(),
            registers: String::new()
        })
        .exit_code(),
        70
    );
}

#[test]
fn null_page_access_is_a_guest_fault() {
    let mut asm = Asm::default();
    asm.load_rax(8);
    asm.vima(Call::VsExit as u64, &[0]);
    let (outcome, _, _) = run(&asm.0, b"");
    assert!(matches!(outcome, Outcome::GuestFault(_)), "{outcome:?}");
}
