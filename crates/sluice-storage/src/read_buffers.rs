//! Reusable buffers for large segment reads.
//!
//! A read of a few MiB into fresh memory pays a page fault and a zero-fill for every 4 KiB
//! before the data is copied in; on this project's VMs, whose memory the hypervisor backs on
//! first touch, that measured 5-13 us a page, more than the read itself. Buffers here go back
//! to a small shared pool when the last `Bytes` slice of them is dropped (wherever that
//! happens: usually after the records were sent), so steady reading keeps reusing warm memory.
//! Small reads (a single record) do not use the pool.

use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use bytes::Bytes;

/// Reads at least this large take a pooled buffer.
pub const POOLED_MIN_BYTES: usize = 64 << 10;
/// Buffers kept for reuse; beyond this, returned buffers are freed.
const MAX_POOLED: usize = 16;
/// Buffers above this capacity are freed rather than kept.
const MAX_POOLED_CAPACITY: usize = 16 << 20;

/// The pool segment reads use.
pub static SHARED: LazyLock<Arc<Pool>> = LazyLock::new(|| Arc::new(Pool::default()));

/// Buffers waiting for reuse.
#[derive(Debug, Default)]
pub struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
}

/// Owns a pooled buffer while `Bytes` slices of it live, and returns it when they are gone.
struct Lent {
    buf: Vec<u8>,
    pool: Arc<Pool>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if buf.capacity() > MAX_POOLED_CAPACITY {
            return;
        }
        let mut free = self.pool.free.lock().unwrap_or_else(PoisonError::into_inner);
        if free.len() < MAX_POOLED {
            free.push(buf);
        }
    }
}

impl Pool {
    /// An empty buffer with room for `len` bytes: a pooled one for large reads.
    pub fn take(&self, len: usize) -> Vec<u8> {
        if len >= POOLED_MIN_BYTES {
            let reused = self.free.lock().unwrap_or_else(PoisonError::into_inner).pop();
            if let Some(mut buf) = reused {
                buf.clear();
                buf.reserve(len);
                return buf;
            }
        }
        Vec::with_capacity(len)
    }

    /// A buffer of exactly `len` initialized bytes (contents unspecified), for reads that need
    /// initialized memory. A pooled buffer keeps the length of its last read, so refilling one
    /// of the same size zero-fills nothing.
    pub fn take_filled(&self, len: usize) -> Vec<u8> {
        let mut buf = if len >= POOLED_MIN_BYTES {
            self.free.lock().unwrap_or_else(PoisonError::into_inner).pop().unwrap_or_default()
        } else {
            Vec::new()
        };
        buf.resize(len, 0);
        buf
    }

    /// The filled buffer as `Bytes`; a large one returns to the pool once every slice is
    /// dropped.
    pub fn freeze(self: &Arc<Self>, buf: Vec<u8>) -> Bytes {
        if buf.capacity() >= POOLED_MIN_BYTES {
            Bytes::from_owner(Lent { buf, pool: Arc::clone(self) })
        } else {
            Bytes::from(buf)
        }
    }

    /// Buffers waiting for reuse.
    #[cfg(test)]
    fn pooled(&self) -> usize {
        self.free.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_buffer_comes_back_when_its_last_slice_is_dropped() {
        let pool = Arc::new(Pool::default());
        let mut buf = pool.take(1 << 20);
        buf.extend_from_slice(&[7u8; 1 << 20]);
        let address = buf.as_ptr();
        let whole = pool.freeze(buf);
        let slice = whole.slice(10..20);
        drop(whole);
        assert_eq!(pool.pooled(), 0, "a slice still holds it");
        assert_eq!(&slice[..], &[7u8; 10]);
        drop(slice);
        assert_eq!(pool.pooled(), 1, "back in the pool");
        let again = pool.take(1 << 20);
        assert!(again.is_empty() && again.capacity() >= 1 << 20);
        assert_eq!(again.as_ptr(), address, "the same memory is reused");
    }

    #[test]
    fn a_filled_buffer_has_the_asked_length_and_reuses_pooled_memory() {
        let pool = Arc::new(Pool::default());
        let mut buf = pool.take(1 << 20);
        buf.extend_from_slice(&[7u8; 1 << 20]);
        let address = buf.as_ptr();
        drop(pool.freeze(buf));
        let again = pool.take_filled((1 << 20) - 10);
        assert_eq!(again.len(), (1 << 20) - 10);
        assert_eq!(again.as_ptr(), address, "the same memory is reused");
        assert_eq!(pool.take_filled(300).len(), 300);
    }

    #[test]
    fn small_buffers_are_not_pooled_and_the_pool_is_bounded() {
        let pool = Arc::new(Pool::default());
        drop(pool.freeze(pool.take(100)));
        assert_eq!(pool.pooled(), 0);
        let held: Vec<Bytes> = (0..MAX_POOLED + 4).map(|_| pool.freeze(pool.take(POOLED_MIN_BYTES))).collect();
        drop(held);
        assert_eq!(pool.pooled(), MAX_POOLED);
    }
}
