//! The authentication handshake of an accepted connection (see
//! [`auth`](crate::auth)): a `Pending` entry is made, the challenge sent,
//! the answer read as it arrives and judged, the verdict line sent, and the
//! connection forked with its session or closed.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;
use mio::Interest;

use super::Servers;
use crate::auth::{self, handshake};
use crate::listener::{Pending, Server, ServerEvent};
use crate::registry::{Entry, Full, Registry};
use crate::sys;
use crate::token::{Key, Sub};

impl Servers {
    /// Sends the challenge and waits (in the reactor) for the answer.
    pub(super) fn start_handshake(
        &mut self,
        tokens: &mut Registry,
        poll: &mio::Registry,
        server: Server,
        mut stream: TcpStream,
        peer: SocketAddr,
        deadline: Option<Instant>,
    ) {
        let fail = |events: &mut VecDeque<ServerEvent>, reason| {
            events.push_back(ServerEvent::AuthFailed {
                server,
                peer,
                reason,
            })
        };
        let _ = stream.set_nodelay(true);
        let Ok((nonce, line)) = handshake::challenge() else {
            return fail(&mut self.events, "no random nonce");
        };
        // A fresh socket's buffer takes the 97-byte line whole.
        if sys::send_nosignal(&stream, &line).ok() != Some(line.len()) {
            return fail(&mut self.events, "could not send the challenge");
        }
        let inserted = tokens.insert_with(|key| {
            poll.register(&mut stream, key.token(Sub::Main), Interest::READABLE)
                .map_err(|_| Full)?;
            Ok::<_, Full>(Entry::Pending(Pending {
                stream,
                peer,
                server,
                nonce,
                deadline,
            }))
        });
        let Ok(key) = inserted else {
            return fail(&mut self.events, "could not watch the connection");
        };
        if let Some(l) = tokens.listener_mut(server.key) {
            l.handshaking += 1;
        }
        self.handshakes.push(key);
        // The answer may be there already (edge-triggered: look now).
        self.auth_ready(tokens, poll, key);
    }

    /// Removes a handshake from the registry and its server's count.
    pub(super) fn end_handshake(
        &mut self,
        tokens: &mut Registry,
        poll: &mio::Registry,
        key: Key,
    ) -> Option<Pending> {
        let Some(Entry::Pending(mut p)) = tokens.remove(key) else {
            return None;
        };
        let _ = poll.deregister(&mut p.stream);
        self.handshakes.retain(|&k| k != key);
        if let Some(l) = tokens.listener_mut(p.server.key) {
            l.handshaking = l.handshaking.saturating_sub(1);
        }
        Some(p)
    }

    /// The answer arrived (or the peer went away): judge it, send the
    /// verdict, then fork or close.
    pub(super) fn auth_ready(&mut self, tokens: &mut Registry, poll: &mio::Registry, key: Key) {
        let Some(p) = tokens.pending(key) else {
            return;
        };
        let verdict = match auth::take_line(&p.stream) {
            Ok(None) => return,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Ok(Some(answer)) => {
                let l = tokens.listener(p.server.key);
                match l.and_then(|l| {
                    l.opts
                        .secret
                        .as_ref()
                        .map(|s| (s, l.opts.require_encryption))
                }) {
                    Some((s, require)) => handshake::judge(s, &p.nonce, &answer, require, p.peer),
                    None => handshake::Verdict::Refuse {
                        line: handshake::refusal(handshake::STOPPED),
                        reason: "server gone",
                    },
                }
            }
            Err(_) => handshake::Verdict::Refuse {
                line: Vec::new(),
                reason: "closed, or sent an over-long line, during the handshake",
            },
        };
        let Some(p) = self.end_handshake(tokens, poll, key) else {
            return;
        };
        match verdict {
            handshake::Verdict::Accept { line, session } => {
                // A fresh socket's buffer takes the short line whole.
                if sys::send_nosignal(&p.stream, &line).ok() != Some(line.len()) {
                    return self.events.push_back(ServerEvent::AuthFailed {
                        server: p.server,
                        peer: p.peer,
                        reason: "could not send the verdict",
                    });
                }
                self.fork_for(tokens, poll, p.server.key, p.stream, p.peer, Some(session))
            }
            handshake::Verdict::Refuse { line, reason } => {
                refuse(p.stream, &line);
                self.events.push_back(ServerEvent::AuthFailed {
                    server: p.server,
                    peer: p.peer,
                    reason,
                })
            }
        }
    }

    /// Closes handshakes past their deadline.
    pub(super) fn expire_handshakes(&mut self, tokens: &mut Registry, poll: &mio::Registry) {
        let now = Instant::now();
        let late: Vec<Key> = self
            .handshakes
            .iter()
            .copied()
            .filter(|&k| {
                tokens
                    .pending(k)
                    .is_none_or(|p| p.deadline.is_some_and(|d| d <= now))
            })
            .collect();
        for key in late {
            let Some(p) = self.end_handshake(tokens, poll, key) else {
                self.handshakes.retain(|&k| k != key);
                continue;
            };
            refuse(p.stream, &handshake::refusal(handshake::TIMEOUT));
            self.events.push_back(ServerEvent::AuthFailed {
                server: p.server,
                peer: p.peer,
                reason: "no answer in time",
            });
        }
    }
}

/// Sends a refusal line (best effort) and closes so that it is read: writing
/// is shut down first, and what the client already sent is drained (bounded),
/// since closing with unread input would reset the connection and could
/// destroy the refusal before the client reads it.
pub(super) fn refuse(stream: TcpStream, line: &[u8]) {
    if !line.is_empty() {
        let _ = sys::send_nosignal(&stream, line);
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        match sys::peek(&stream, &mut sink) {
            Ok(n) if n > 0 => {
                let _ = sys::recv_exact_nonblocking(&stream, &mut sink[..n]);
            }
            _ => break,
        }
    }
}
