//! Running a loaded program on a packet through BPF_PROG_TEST_RUN, without attaching it: the
//! packet-level tests of the tc program feed it frames and check the frames it gives back.

use std::{io, os::fd::AsRawFd as _};

/// What one test run returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value (a `TC_ACT_*` verdict for tc programs).
    pub verdict: u32,
    /// The packet as the program left it.
    pub packet: Vec<u8>,
}

/// `union bpf_attr` for BPF_PROG_TEST_RUN (the `test` member, as of Linux 5.10).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// Runs `prog` once on `packet`. Room is left for the program to grow the packet a little.
pub(crate) fn run(prog: &aya::programs::ProgramFd, packet: &[u8]) -> io::Result<TestRun> {
    let mut out = vec![0_u8; packet.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: prog.as_fd_raw(),
        data_size_in: u32::try_from(packet.len()).map_err(|_| io::ErrorKind::InvalidInput)?,
        data_size_out: u32::try_from(out.len()).map_err(|_| io::ErrorKind::InvalidInput)?,
        data_in: packet.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..TestRunAttr::default()
    };
    #[expect(unsafe_code, reason = "aya 0.14 has no wrapper for BPF_PROG_TEST_RUN")]
    // SAFETY: `attr` is a valid, fully initialised bpf_attr prefix of the size passed; the
    // kernel reads `data_size_in` bytes from `packet` and writes at most `data_size_out` bytes
    // into `out`, both of which outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &raw mut attr,
            size_of::<TestRunAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    out.truncate(attr.data_size_out as usize);
    Ok(TestRun {
        verdict: attr.retval,
        packet: out,
    })
}

trait RawProgFd {
    fn as_fd_raw(&self) -> u32;
}

impl RawProgFd for aya::programs::ProgramFd {
    fn as_fd_raw(&self) -> u32 {
        use std::os::fd::AsFd as _;
        u32::try_from(self.as_fd().as_raw_fd()).unwrap_or(u32::MAX)
    }
}
