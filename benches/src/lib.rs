//! Shared helpers of the Sluice benchmarks.
