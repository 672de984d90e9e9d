//! `sluice-bench disk`: the disk's durable-write ceiling, to run beside `produce --fsync
//! always` on the same disk. A bare loop of `--block-kib` writes, each followed by fdatasync,
//! appending to a fresh file in `--dir` (the broker's data disk): what fsync `always` could
//! reach with no broker at all.

use std::io::Write;
use std::time::Instant;

use crate::BenchResult;

/// What `disk` does.
#[derive(Debug, clap::Args)]
pub struct DiskSpec {
    /// A directory on the disk to measure (a scratch file is made in it and removed).
    #[arg(long)]
    dir: std::path::PathBuf,
    /// Bytes per write.
    #[arg(long, default_value_t = 1024)]
    block_kib: usize,
    /// Total to write.
    #[arg(long, default_value_t = 512)]
    total_mib: usize,
}

pub fn run(spec: &DiskSpec) -> BenchResult {
    let path = spec.dir.join(format!(".sluice-bench-disk-{}", std::process::id()));
    let result = write_loop(&path, spec);
    let _scratch_gone = std::fs::remove_file(&path);
    let (seconds, writes) = result?;
    let bytes = (writes * spec.block_kib * 1024) as f64;
    println!(
        "{{\"bench\":\"disk\",\"block_kib\":{},\"writes\":{writes},\"seconds\":{seconds:.3},\"mb_per_s\":{:.1},\"fdatasync_per_s\":{:.0}}}",
        spec.block_kib,
        bytes / seconds / 1e6,
        writes as f64 / seconds
    );
    println!("disk: write+fdatasync of {} KiB: {:.1} MB/s", spec.block_kib, bytes / seconds / 1e6);
    Ok(())
}

fn write_loop(path: &std::path::Path, spec: &DiskSpec) -> BenchResult<(f64, usize)> {
    let mut file = std::fs::OpenOptions::new().create_new(true).write(true).open(path)?;
    let block = vec![0x5a_u8; spec.block_kib * 1024];
    let writes = (spec.total_mib * 1024).div_ceil(spec.block_kib.max(1));
    let started = Instant::now();
    for _ in 0..writes {
        file.write_all(&block)?;
        file.sync_data()?;
    }
    Ok((started.elapsed().as_secs_f64(), writes))
}
