//! `sluice-bench disk`: the disk's durable-write ceiling, to run beside `produce --fsync
//! always` on the same disk. A bare loop of `--block-kib` writes, each followed by fdatasync,
//! appending to a fresh file in `--dir` (the broker's data disk): what fsync `always` could
//! reach with no broker at all.
//!
//! With `--overwrite` the file is first written with zeros and synced (not timed), and the loop
//! then writes over them: an fdatasync then need not also write the file's new length and block
//! map. The two loops side by side show what that metadata write costs on a disk (benches/README,
//! fifth pass).

use std::io::{Seek, Write};
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
    /// Write over zeros written (and synced) beforehand instead of appending.
    #[arg(long)]
    overwrite: bool,
}

pub fn run(spec: &DiskSpec) -> BenchResult {
    let path = spec.dir.join(format!(".sluice-bench-disk-{}", std::process::id()));
    let result = write_loop(&path, spec);
    let _scratch_gone = std::fs::remove_file(&path);
    let (seconds, writes) = result?;
    let bytes = (writes * spec.block_kib * 1024) as f64;
    println!(
        "{{\"bench\":\"disk\",\"overwrite\":{},\"block_kib\":{},\"writes\":{writes},\"seconds\":{seconds:.3},\"mb_per_s\":{:.1},\"fdatasync_per_s\":{:.0}}}",
        spec.overwrite,
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
    if spec.overwrite {
        let zeros = vec![0_u8; block.len()];
        for _ in 0..writes {
            file.write_all(&zeros)?;
        }
        file.sync_all()?;
        file.rewind()?;
    }
    let started = Instant::now();
    for _ in 0..writes {
        file.write_all(&block)?;
        file.sync_data()?;
    }
    Ok((started.elapsed().as_secs_f64(), writes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &std::path::Path, overwrite: bool) -> DiskSpec {
        DiskSpec { dir: dir.to_path_buf(), block_kib: 4, total_mib: 1, overwrite }
    }

    #[test]
    fn both_loops_write_the_total_and_overwriting_never_grows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for overwrite in [false, true] {
            let path = dir.path().join(format!("loop-{overwrite}"));
            let (_seconds, writes) = write_loop(&path, &spec(dir.path(), overwrite)).unwrap();
            assert_eq!(writes, 256, "1 MiB in 4 KiB writes");
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(bytes.len(), 1 << 20, "overwrite {overwrite}: the file holds exactly the total");
            assert!(bytes.iter().all(|&b| b == 0x5a), "overwrite {overwrite}: every block written over");
        }
    }

    #[test]
    fn the_scratch_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        run(&spec(dir.path(), true)).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
