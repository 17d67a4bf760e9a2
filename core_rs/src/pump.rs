//! Reading an association's socket on a thread of its own.
//!
//! The event loop reads an association until it is established; then it hands the
//! receiver and a duplicate of the socket to the association's pump thread and
//! stops reading. The thread reads, frames, hashes and
//! spools with no Python and no GIL until the receiver has something the state
//! machine must see now (an object's end with its command, a command without a
//! dataset, a control PDU), then hands the receiver back and wakes the loop through
//! one eventfd shared by every pump of the process; the loop hands it straight back.
//! Associations hash and write on as many cores as there are, the way a
//! process-per-association SCP does, and the loop wakes once per object, not per read.
//! See docs/decisions/0033.
//!
//! After a run that ended with requests and their datasets only (the common case: a
//! C-STORE), the thread does not wait to be handed the receiver again: it queues the
//! events, wakes the loop, and reads on, as long as fewer than `max_open` requests
//! are unanswered. The loop takes the queued events without the receiver (decision
//! 43). Anything else (a control PDU, a command without a dataset, the socket's end)
//! hands the receiver back as before.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::CoreError;
use crate::net;
use crate::receiver::{Receiver, RxEvent};

/// How often a waiting pump looks at its cancel flag.
const POLL_MS: libc::c_int = 100;
/// Reads below this end a request or a control PDU (see `net::quick_ack`).
const SMALL_READ: usize = 16 * 1024;

/// Why a pump run ended. Only `Events` and `Failed` carry anything for the state
/// machine; after the others the loop reads the socket itself again, and sees the
/// end of the connection (or the peer's next bytes) the ordinary way.
#[derive(Debug)]
pub enum Ended {
    /// The receiver decoded something the state machine must see.
    Events(Vec<RxEvent>),
    /// The peer broke the protocol: the association is aborted.
    Failed(CoreError),
    /// The socket reached its end or failed; the loop's own read will tell how.
    Closed,
    /// Nothing arrived for `quiet_after`: the loop's idle timer takes over.
    Quiet,
    /// The association ended on the loop's side.
    Cancelled,
}

/// Where finished pump runs are announced: a list of tokens and an eventfd the
/// event loop watches.
#[derive(Debug)]
pub struct Completions {
    eventfd: OwnedFd,
    done: Mutex<Vec<u64>>,
}

impl Completions {
    /// # Errors
    /// When the kernel refuses an eventfd (descriptor limit).
    pub fn new() -> std::io::Result<Self> {
        // SAFETY: eventfd takes no pointers; a negative result is an error, anything
        // else a new descriptor that nothing else owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            // SAFETY: `fd` was just created above and is owned by nothing else.
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
            done: Mutex::new(Vec::new()),
        })
    }

    #[must_use]
    pub fn fd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    fn push(&self, token: u64) {
        self.done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(token);
        let one: u64 = 1;
        // SAFETY: write reads 8 bytes from `one`, alive on this frame. It cannot fail
        // but by overflowing the counter (2^64 - 1 wake-ups unread), which `take`
        // resets; a lost wake-up then still finds the token in the list next time.
        unsafe { libc::write(self.fd(), std::ptr::from_ref(&one).cast(), 8) };
    }

    /// The tokens of the runs that ended since the last call; resets the eventfd.
    pub fn take(&self) -> Vec<u64> {
        let mut counter: u64 = 0;
        // SAFETY: read writes at most 8 bytes into `counter`, alive on this frame;
        // EAGAIN (nothing pending) leaves it untouched and is not an error here.
        unsafe { libc::read(self.fd(), std::ptr::from_mut(&mut counter).cast(), 8) };
        std::mem::take(&mut *self.done.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// What a pump thread hands the loop: events of runs it read on after, then the
/// receiver itself with how its last run ended.
#[derive(Debug, Default)]
pub struct Back {
    pub events: Vec<RxEvent>,
    pub returned: Option<(Receiver, Ended)>,
}

type Slot = Arc<Mutex<Back>>;

/// One association's pump thread. Dropping it ends the thread once its run is over.
#[derive(Debug)]
pub struct Pump {
    go: mpsc::Sender<Box<Receiver>>,
    back: Slot,
    cancel: Arc<AtomicBool>,
}

/// What a pump thread works with besides the receiver it is handed per run.
struct Line {
    socket: OwnedFd,
    buffer: Vec<u8>,
    cancel: Arc<AtomicBool>,
    quiet_after: Duration,
    max_open: usize,
}

impl Pump {
    /// A thread that reads `socket` (the association's, duplicated) in pieces of up
    /// to `buffer_len` bytes whenever it is handed the receiver, and announces the end
    /// of each run to `completions` as `token`. It reads on past a request with a
    /// dataset while fewer than `max_open` are unanswered (`Receiver::open`).
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn spawn(
        socket: OwnedFd,
        buffer_len: usize,
        completions: Arc<Completions>,
        token: u64,
        quiet_after: Duration,
        max_open: usize,
    ) -> std::io::Result<Self> {
        let (go, runs) = mpsc::channel::<Box<Receiver>>();
        let back: Slot = Arc::new(Mutex::new(Back::default()));
        let cancel = Arc::new(AtomicBool::new(false));
        let mut line = Line {
            socket,
            buffer: vec![0; buffer_len],
            cancel: Arc::clone(&cancel),
            quiet_after,
            max_open,
        };
        let slot = Arc::clone(&back);
        thread::Builder::new()
            .name(format!("pump-{token}"))
            .spawn(move || {
                // Ends when the Pump (the only sender) is dropped.
                while let Ok(mut receiver) = runs.recv() {
                    let ended = loop {
                        match line.run(&mut receiver) {
                            Ended::Events(events) if line.reads_on(&receiver, &events) => {
                                slot.lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .events
                                    .extend(events);
                                completions.push(token);
                            }
                            ended => break ended,
                        }
                    };
                    slot.lock().unwrap_or_else(PoisonError::into_inner).returned =
                        Some((*receiver, ended));
                    completions.push(token);
                }
            })?;
        Ok(Self { go, back, cancel })
    }

    /// Hand the receiver to the thread (a cancel before is forgotten); it comes back
    /// through `finish`.
    ///
    /// # Errors
    /// The receiver itself, if the thread is gone (it panicked).
    pub fn start(&self, receiver: Box<Receiver>) -> Result<(), Box<Receiver>> {
        self.cancel.store(false, Ordering::Relaxed);
        self.go.send(receiver).map_err(|failed| failed.0)
    }

    /// What the thread handed over since the last call, once `Completions` named
    /// this pump: events it read on after, and the receiver if its run is over.
    #[must_use]
    pub fn take(&self) -> Back {
        std::mem::take(&mut *self.back.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// End the current run as soon as the thread next looks (within `POLL_MS`).
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl Line {
    /// Whether the thread keeps the receiver after a run that ended with `events`:
    /// a dataset's end, and nothing but requests and their datasets (nothing the state
    /// machine must see before the next bytes are read), no cancel, and room for
    /// another open request.
    fn reads_on(&self, receiver: &Receiver, events: &[RxEvent]) -> bool {
        let dataset = |event: &RxEvent| matches!(event, RxEvent::Dataset { .. });
        !self.cancel.load(Ordering::Relaxed)
            && receiver.open() < self.max_open
            && events.iter().any(dataset)
            && events
                .iter()
                .all(|event| announces_dataset(event) || dataset(event))
    }

    fn run(&mut self, receiver: &mut Receiver) -> Ended {
        let mut held = Vec::new();
        match self.read(receiver, &mut held) {
            // Commands held for their dataset go up with whatever ended the run: the
            // loop must know them when it reads the rest.
            Ended::Quiet | Ended::Closed if !held.is_empty() => Ended::Events(held),
            ended => ended,
        }
    }

    /// Read until the receiver has decoded something the state machine must see
    /// now. A command that announces a dataset is held until the dataset's end (the
    /// state machine does nothing with it before), so an object wakes the loop once.
    fn read(&mut self, receiver: &mut Receiver, held: &mut Vec<RxEvent>) -> Ended {
        let fd = self.socket.as_fd().as_raw_fd();
        let mut last_data = Instant::now();
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Ended::Cancelled;
            }
            // Read first, wait only when nothing is there: under load the bytes are
            // usually waiting, and a poll before each read would double the syscalls.
            // SAFETY: read writes at most `buffer.len()` bytes into the buffer, which
            // this thread owns; `fd` stays open (we own the duplicate).
            let n = unsafe { libc::read(fd, self.buffer.as_mut_ptr().cast(), self.buffer.len()) };
            let n = match usize::try_from(n) {
                Ok(0) => return Ended::Closed,
                Ok(n) => n,
                Err(_) => match std::io::Error::last_os_error().kind() {
                    std::io::ErrorKind::WouldBlock => match readable(fd) {
                        Ok(false) if last_data.elapsed() >= self.quiet_after => {
                            return Ended::Quiet
                        }
                        Ok(_) => continue,
                        Err(_) => return Ended::Closed,
                    },
                    std::io::ErrorKind::Interrupted => continue,
                    _ => return Ended::Closed,
                },
            };
            last_data = Instant::now();
            if n < SMALL_READ {
                // As the loop does; a socket that is gone shows at the next read.
                let _ = net::quick_ack(fd);
            }
            match receiver.feed(&self.buffer[..n]) {
                Err(err) => return Ended::Failed(err),
                Ok(events) => held.extend(events),
            }
            if held.iter().any(|event| !announces_dataset(event)) {
                return Ended::Events(std::mem::take(held));
            }
        }
    }
}

fn announces_dataset(event: &RxEvent) -> bool {
    matches!(event, RxEvent::Command { command, .. } if command.has_dataset())
}

/// Whether `fd` has bytes (or its end, or an error) to read within `POLL_MS`.
fn readable(fd: RawFd) -> std::io::Result<bool> {
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll reads and writes exactly one pollfd, alive on this frame.
    let rc = unsafe { libc::poll(&raw mut pollfd, 1, POLL_MS) };
    match rc {
        0 => Ok(false),
        1.. => Ok(true),
        _ => {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::{encode_message, Limits};
    use crate::receiver::tests::{context, store_rq, SC_IMAGE};
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    /// A pump reading the server side of a fresh loopback connection, already
    /// handed `rx`; the client side is for the test to write to.
    fn pumping(rx: Receiver, quiet_after: Duration) -> (TcpStream, Pump, Arc<Completions>) {
        pumping_with(rx, quiet_after, 1)
    }

    fn pumping_with(
        rx: Receiver,
        quiet_after: Duration,
        max_open: usize,
    ) -> (TcpStream, Pump, Arc<Completions>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let completions = Arc::new(Completions::new().unwrap());
        let pump = Pump::spawn(
            OwnedFd::from(server),
            4096,
            Arc::clone(&completions),
            7,
            quiet_after,
            max_open,
        )
        .unwrap();
        pump.start(Box::new(rx)).unwrap();
        (client, pump, completions)
    }

    /// The next hand-over: (events read on after, the receiver if it is back).
    fn next(completions: &Completions, pump: &Pump) -> Back {
        for _ in 0..500 {
            if completions.take().contains(&7) {
                return pump.take();
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("the pump never handed anything over");
    }

    fn wait(completions: &Completions, pump: &Pump) -> (Receiver, Ended) {
        let back = next(completions, pump);
        assert!(back.events.is_empty(), "{:?}", back.events);
        back.returned.expect("the receiver back")
    }

    fn receiver(dir: &std::path::Path) -> Receiver {
        let mut rx = Receiver::new(Limits::default(), dir.to_path_buf(), "p".into());
        rx.establish("CT1", &[(1, context(SC_IMAGE, "1.2.840.10008.1.2.1"))]);
        rx
    }

    #[test]
    fn an_object_comes_back_once_with_its_command() {
        let tmp = tempfile::TempDir::new().unwrap();
        let dir = tmp.path();
        let (mut client, pump, completions) = pumping(receiver(dir), Duration::from_secs(5));
        // Command and dataset in small pieces: the command is held, not handed up.
        let mut wire = encode_message(1, true, &store_rq(), 0);
        wire.extend(encode_message(1, false, &vec![5u8; 100_000], 1000));
        for piece in wire.chunks(30_000) {
            client.write_all(piece).unwrap();
            thread::sleep(Duration::from_millis(5));
        }
        let (rx, ended) = wait(&completions, &pump);
        let Ended::Events(events) = ended else {
            panic!("{ended:?}")
        };
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(announces_dataset(&events[0]));
        let RxEvent::Dataset {
            spool: Ok(spool), ..
        } = &events[1]
        else {
            panic!()
        };
        assert_eq!(spool.dataset_len(), 100_000);
        assert!(rx.at_boundary());

        // A peer that stops after a command: the command still comes up.
        pump.start(Box::new(rx)).unwrap();
        client
            .write_all(&encode_message(1, true, &store_rq(), 0))
            .unwrap();
        drop(client);
        let (rx, ended) = wait(&completions, &pump);
        assert!(
            matches!(ended, Ended::Events(ref e) if e.len() == 1),
            "{ended:?}"
        );
        assert!(rx.streaming());
    }

    fn object(client: &mut TcpStream, fill: u8) {
        client
            .write_all(&encode_message(1, true, &store_rq(), 0))
            .unwrap();
        client
            .write_all(&encode_message(1, false, &vec![fill; 10_000], 4000))
            .unwrap();
    }

    #[test]
    fn the_thread_reads_on_past_objects_while_few_are_open() {
        let tmp = tempfile::TempDir::new().unwrap();
        let rx = receiver(tmp.path());
        let open = rx.open_requests();
        let (mut client, pump, completions) = pumping_with(rx, Duration::from_secs(5), 2);

        // The first object comes up and the thread keeps the receiver.
        object(&mut client, 1);
        let back = next(&completions, &pump);
        assert_eq!(back.events.len(), 2, "{:?}", back.events);
        assert!(
            back.returned.is_none(),
            "read on after one open request of two"
        );
        assert_eq!(open.load(Ordering::Acquire), 1);

        // The second reaches the bound: the receiver comes back with it.
        object(&mut client, 2);
        let back = next(&completions, &pump);
        let (rx, ended) = back.returned.expect("back at two open requests");
        let Ended::Events(events) = ended else {
            panic!("{ended:?}")
        };
        assert_eq!(back.events.len() + events.len(), 2);
        assert_eq!(rx.open(), 2);

        // Both answered: the thread reads on again, and a release hands it back.
        open.store(0, Ordering::Release);
        pump.start(Box::new(rx)).unwrap();
        object(&mut client, 3);
        assert!(next(&completions, &pump).returned.is_none());
        client
            .write_all(&[0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0])
            .unwrap(); // A-RELEASE-RQ
        let back = next(&completions, &pump);
        let (_, ended) = back
            .returned
            .expect("a control PDU hands the receiver back");
        assert!(
            matches!(ended, Ended::Events(ref e) if matches!(e[..], [RxEvent::Control { pdu_type: 5, .. }])),
            "{ended:?}"
        );
    }

    #[test]
    fn a_closed_socket_a_broken_pdu_a_cancel_and_silence_end_the_run() {
        let dir = std::env::temp_dir();
        let quiet = Duration::from_secs(5);

        let (client, pump, completions) = pumping(receiver(&dir), quiet);
        drop(client);
        assert!(matches!(wait(&completions, &pump).1, Ended::Closed));

        let (mut client, pump, completions) = pumping(receiver(&dir), quiet);
        client.write_all(&[0x04, 0, 0, 0, 0, 2, 9, 9]).unwrap(); // PDV item too short
        assert!(matches!(
            wait(&completions, &pump).1,
            Ended::Failed(CoreError::Protocol { .. })
        ));

        let (_client, pump, completions) = pumping(receiver(&dir), quiet);
        pump.cancel();
        assert!(matches!(wait(&completions, &pump).1, Ended::Cancelled));

        let (_client, pump, completions) = pumping(receiver(&dir), Duration::from_millis(150));
        assert!(matches!(wait(&completions, &pump).1, Ended::Quiet));
    }
}
