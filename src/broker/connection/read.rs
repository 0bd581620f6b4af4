//! Socket reads that hold no buffer while a connection is idle.
//!
//! Most connections of a large deployment are idle (a sensor publishing once a minute). A read
//! buffer kept allocated per connection would dominate their memory, so a connection waiting
//! for bytes with nothing unprocessed owns no read buffer: the next read lands in a buffer on
//! the worker thread's stack and only what arrived is copied into a fresh allocation. A busy
//! connection (a partial packet buffered) reads straight into its buffer.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::Poll;

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};

/// Free space guaranteed to a read into a connection's own buffer, and the size of the stack
/// buffer an idle connection's first read lands in.
pub(super) const READ_CHUNK_BYTES: usize = 8 * 1024;

/// Read what the socket has into `buf`: `Ok(0)` is the end of the stream. Cancel-safe (no
/// state is kept between polls), so it can sit in a `select!`. While the socket has nothing
/// and `buf` holds no bytes, `buf`'s allocation is released.
pub(super) async fn read_some<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
) -> io::Result<usize> {
    poll_fn(|cx| {
        if !buf.is_empty() {
            if buf.capacity() - buf.len() < READ_CHUNK_BYTES {
                buf.reserve(READ_CHUNK_BYTES);
            }
            return tokio_util::io::poll_read_buf(Pin::new(&mut *reader), cx, buf);
        }
        // Uninitialized: zeroing 8 KiB on every poll (also the ones that find nothing) cost
        // about an eighth of the broker's instructions per message in a QoS 1 pairs run.
        // Plain TCP reads into it as it is; a reader that needs initialized memory (TLS)
        // initializes what it uses itself.
        let mut scratch = [MaybeUninit::<u8>::uninit(); READ_CHUNK_BYTES];
        let mut landed = ReadBuf::uninit(&mut scratch);
        match Pin::new(&mut *reader).poll_read(cx, &mut landed) {
            Poll::Ready(Ok(())) => {
                let bytes = landed.filled();
                // Room for the rest of a packet that is larger than this read, without a
                // second allocation in the common case.
                buf.reserve(bytes.len().max(READ_CHUNK_BYTES));
                buf.extend_from_slice(bytes);
                Poll::Ready(Ok(bytes.len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if buf.capacity() > 0 {
                    *buf = BytesMut::new();
                }
                Poll::Pending
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn idle_reader_releases_its_buffer_and_reads_on() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
        // Nothing to read: the poll is pending and the empty buffer is released.
        let pending = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            read_some(&mut server, &mut buf),
        )
        .await;
        assert!(pending.is_err(), "nothing was written, the read must wait");
        assert_eq!(buf.capacity(), 0);

        client.write_all(b"hello").await.expect("write");
        assert_eq!(read_some(&mut server, &mut buf).await.expect("read"), 5);
        assert_eq!(&buf[..], b"hello");

        // Unprocessed bytes are kept while waiting, and later bytes are appended to them.
        let pending = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            read_some(&mut server, &mut buf),
        )
        .await;
        assert!(pending.is_err());
        assert_eq!(&buf[..], b"hello");
        let big = vec![7u8; 3 * READ_CHUNK_BYTES];
        client.write_all(&big).await.expect("write");
        let mut total = 5;
        while total < 5 + big.len() {
            total += read_some(&mut server, &mut buf).await.expect("read");
        }
        assert_eq!(buf.len(), 5 + big.len());
        assert_eq!(&buf[5..], &big[..]);

        drop(client);
        buf.clear();
        assert_eq!(read_some(&mut server, &mut buf).await.expect("eof"), 0);
    }
}
