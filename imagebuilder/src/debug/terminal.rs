//! The local terminal: raw mode for the length of a session, its size and resizes, and the
//! signals that end a session early.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::signal::unix::{signal, SignalKind};

/// Raw mode while alive: keystrokes (Ctrl-C, Ctrl-D included) go to the toolbox's TTY, which
/// interprets them; the terminal is restored on drop, also on errors and early returns.
pub struct RawMode(());

impl RawMode {
    pub fn enable() -> std::io::Result<RawMode> {
        crossterm::terminal::enable_raw_mode()?;
        Ok(RawMode(()))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Nothing more can be done if the terminal is gone.
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// Columns and rows of the local terminal.
pub fn size() -> Option<(u16, u16)> {
    crossterm::terminal::size()
        .ok()
        .filter(|(w, h)| *w > 0 && *h > 0)
}

/// Resolves on each change of the terminal's size (SIGWINCH).
pub struct Resizes(tokio::signal::unix::Signal);

impl Resizes {
    pub fn new() -> std::io::Result<Resizes> {
        Ok(Resizes(signal(SignalKind::window_change())?))
    }

    /// The new size, after the next resize.
    pub async fn next(&mut self) -> Option<(u16, u16)> {
        loop {
            self.0.recv().await?;
            if let Some(s) = size() {
                return Some(s);
            }
        }
    }
}

/// Resolves with the exit code for a signal that ends the session: SIGINT (130), SIGTERM
/// (143) or SIGHUP (129), so that the caller still cleans up.
pub async fn interrupted() -> i32 {
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => 130,
        _ = term.recv() => 143,
        _ = hup.recv() => 129,
    }
}

/// Copies local standard input to `to` until either side closes.
pub async fn pump_stdin<W: AsyncWrite + Unpin>(mut to: W) {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 1024];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() || to.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// Copies `from` to local standard output (flushing each read, for a terminal) until EOF.
pub async fn pump_stdout<R: AsyncRead + Unpin>(mut from: R) -> std::io::Result<()> {
    copy_flushing(&mut from, &mut tokio::io::stdout()).await
}

/// Copies `from` to `to`, flushing after each read.
pub async fn copy_flushing<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    from: &mut R,
    to: &mut W,
) -> std::io::Result<()> {
    let mut buf = [0u8; 8192];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
    }
}
