//! Test-only link delay: a TCP stream whose received bytes reach the upper layers a fixed time
//! after they arrived.
//!
//! Why it exists: the network-namespace benchmark asks for 10 ms of delay on every link, which
//! Linux gives with `sch_netem`. On a kernel without it ([`crate::FabricConfig`]'s
//! `fault_read_delay`, set by `floed fabric --fault-read-delay-ms` and used by the benchmark
//! only then), every node holds what it reads for the delay instead, so each request and
//! response, and each of noise's, yamux's and the protocols' round trips, takes two delays
//! longer, as it would on the link. What it does not model: the kernel's TCP acknowledgements
//! are not delayed, so TCP's own congestion window never sees the longer round trip. Off by
//! default; nothing but the fault flag turns it on.
//!
//! Memory is bounded: at most [`MAX_HELD`] bytes are held; past that the stream stops reading
//! from the socket, and TCP's flow control pushes back on the sender.

use futures::{AsyncRead, AsyncWrite};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Most bytes one stream holds back (2 MiB: 0.3 s of a 50 Mbit/s link).
pub const MAX_HELD: usize = 2 << 20;
/// The longest delay applied (a longer one is cut to it, so a release time cannot overflow).
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// Largest single read from the socket.
const READ_LEN: usize = 64 * 1024;

/// A stream that delays what it reads by a fixed time; writes pass straight through.
pub struct Delayed<S> {
    inner: S,
    delay: Duration,
    /// Bytes read, each run with the time it may be released; an empty run is end of stream.
    held: VecDeque<(Instant, Vec<u8>)>,
    /// Bytes already released from the front run.
    offset: usize,
    bytes: usize,
    eof: bool,
    timer: Option<Pin<Box<Sleep>>>,
    /// Where socket reads land before they are copied into a run.
    scratch: Vec<u8>,
}

impl<S> std::fmt::Debug for Delayed<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delayed")
            .field("delay", &self.delay)
            .field("held", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl<S> Delayed<S> {
    /// Wraps `inner`, delaying its reads by `delay` (at most [`MAX_DELAY`]).
    pub fn new(inner: S, delay: Duration) -> Self {
        Self {
            inner,
            delay: delay.min(MAX_DELAY),
            held: VecDeque::new(),
            offset: 0,
            bytes: 0,
            eof: false,
            timer: None,
            scratch: vec![0u8; READ_LEN],
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Delayed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Take in whatever the socket has, stamped with its release time.
        while !this.eof && this.bytes < MAX_HELD {
            let room = READ_LEN.min(MAX_HELD - this.bytes);
            match Pin::new(&mut this.inner).poll_read(cx, &mut this.scratch[..room]) {
                Poll::Ready(Ok(0)) => {
                    this.eof = true;
                    this.held
                        .push_back((Instant::now() + this.delay, Vec::new()));
                }
                Poll::Ready(Ok(n)) => {
                    this.bytes += n;
                    let run = this.scratch[..n].to_vec();
                    this.held.push_back((Instant::now() + this.delay, run));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        loop {
            let Some((due, run)) = this.held.front() else {
                return Poll::Pending;
            };
            if *due > Instant::now() {
                let due = *due;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                if timer.deadline() != due {
                    timer.as_mut().reset(due);
                }
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                continue;
            }
            if run.is_empty() {
                // End of stream, delayed like the data before it.
                return Poll::Ready(Ok(0));
            }
            let n = (run.len() - this.offset).min(out.len());
            out[..n].copy_from_slice(&run[this.offset..this.offset + n]);
            this.offset += n;
            this.bytes -= n;
            if this.offset == run.len() {
                this.held.pop_front();
                this.offset = 0;
            }
            return Poll::Ready(Ok(n));
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Delayed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use futures::AsyncReadExt;
    use futures::io::Cursor;

    #[tokio::test]
    async fn reads_arrive_whole_in_order_and_no_sooner_than_the_delay() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut reader = Delayed::new(Cursor::new(data.clone()), Duration::from_millis(40));
        let start = Instant::now();
        let mut got = Vec::new();
        let mut first = None;
        let mut buf = [0u8; 10_000];
        loop {
            let n = reader.read(&mut buf).await.unwrap();
            first.get_or_insert_with(|| start.elapsed());
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, data);
        let first = first.unwrap();
        assert!(
            first >= Duration::from_millis(40),
            "the first bytes came after {first:?}"
        );
        assert!(reader.bytes == 0);
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_holds_at_most_the_bound() {
        let mut reader = Delayed::new(Cursor::new(vec![7u8; 6 << 20]), Duration::from_millis(1));
        // One small read pulls in what the source has, up to the bound, and no more.
        let mut buf = [0u8; 16];
        let n = reader.read(&mut buf).await.unwrap();
        assert_eq!(n, 16);
        assert_eq!(reader.bytes, MAX_HELD - 16);
        // The rest still arrives, all of it.
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest.len(), (6 << 20) - 16);
    }
}
