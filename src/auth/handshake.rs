//! The handshake's lines and what each side makes of them, free of I/O:
//! the server's challenge and its verdict on an answer ([`judge`]), the
//! client's answer and its check of the verdict ([`ClientHandshake`]).
//!
//! Every MAC is HMAC-SHA256 under the secret over the ASCII text
//! `LABEL MODE NS NC` (the nonces in lower-case hex), with the labels
//! `miniray-auth-v2 client-proof`, `... server-proof`,
//! `... client-to-server`, `... server-to-client` and `... noise-psk`.

use std::io;
use std::net::SocketAddr;

use super::noise::{self, Initiator};
use super::session::{Mode, Opener, Sealer, Session};
use super::tags::{TagOpener, TagSealer};
use super::{hex, nonce, unhex, Secret, ANY_VERSION, PREFIX};
use crate::error::{AuthFailure, Error};

/// Refusal words the server sends (the last word of a refusal line).
pub(crate) const WRONG_SECRET: &str = "wrong-secret";
pub(crate) const MALFORMED: &str = "malformed-answer";
pub(crate) const ENCRYPTION_REQUIRED: &str = "encryption-required";
pub(crate) const TIMEOUT: &str = "timeout";
pub(crate) const STOPPED: &str = "server-stopped";
pub(crate) const BAD_TAG: &str = "bad-tag";

/// `LABEL MODE NS NC`, the text every MAC of a session is over.
fn text(label: &str, mode: Mode, ns: &[u8], nc: &[u8]) -> Vec<u8> {
    format!("{PREFIX} {label} {} {} {}", mode.word(), hex(ns), hex(nc)).into_bytes()
}

fn derive(secret: &Secret, label: &str, mode: Mode, ns: &[u8], nc: &[u8]) -> [u8; 32] {
    secret.mac(&text(label, mode, ns, nc))
}

/// The transcript both sides bind Noise to (its prologue).
fn prologue(mode: Mode, ns: &[u8], nc: &[u8]) -> Vec<u8> {
    text("noise-prologue", mode, ns, nc)
}

/// A line of the handshake, with its `\n`.
fn line(words: &[&str]) -> Vec<u8> {
    let mut l = words.join(" ").into_bytes();
    l.push(b'\n');
    l
}

/// A refusal line: `miniray-auth-v2 refused WORD`.
pub(crate) fn refusal(word: &str) -> Vec<u8> {
    line(&[PREFIX, "refused", word])
}

/// A fresh server nonce and its challenge line.
pub(crate) fn challenge() -> io::Result<([u8; 32], Vec<u8>)> {
    let ns = nonce()?;
    Ok((ns, line(&[PREFIX, "challenge", &hex(&ns)])))
}

/// The server's verdict on an answer line.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Send `line`, then serve with `session`.
    Accept {
        line: Vec<u8>,
        session: Box<Session>,
    },
    /// Send `line`, then close; `reason` is the server event's.
    Refuse { line: Vec<u8>, reason: &'static str },
}

/// Judges the client's answer (`miniray-auth-v2 answer MODE NC PROOF
/// [NOISE1]`) to the challenge with nonce `ns`.
pub(crate) fn judge(
    secret: &Secret,
    ns: &[u8],
    answer: &[u8],
    require_encryption: bool,
    peer: SocketAddr,
) -> Verdict {
    let refuse = |word: &str, reason: &'static str| Verdict::Refuse {
        line: refusal(word),
        reason,
    };
    let words: Vec<&[u8]> = answer.split(|&b| b == b' ').collect();
    let parsed = match words.as_slice() {
        [p, b"answer", mode, nc, proof, rest @ ..]
            if *p == PREFIX.as_bytes() && rest.len() <= 1 =>
        {
            Mode::from_word(mode)
                .zip(unhex(nc).filter(|n| n.len() == 32))
                .zip(unhex(proof).filter(|p| p.len() == 32))
                .map(|((m, nc), proof)| (m, nc, proof, rest.first().and_then(|n| unhex(n))))
        }
        _ => None,
    };
    let Some((mode, nc, proof, noise1)) = parsed else {
        return refuse(MALFORMED, "malformed answer");
    };
    let expected = derive(secret, "client-proof", mode, ns, &nc);
    if !constant_time_eq(&expected, &proof) {
        return refuse(WRONG_SECRET, "wrong answer");
    }
    if require_encryption && mode != Mode::Noise {
        return refuse(ENCRYPTION_REQUIRED, "encryption required");
    }
    let server_proof = hex(&derive(secret, "server-proof", mode, ns, &nc));
    let c2s = derive(secret, "client-to-server", mode, ns, &nc);
    let s2c = derive(secret, "server-to-client", mode, ns, &nc);
    match mode {
        Mode::Tag => Verdict::Accept {
            line: line(&[PREFIX, "ok", &server_proof]),
            session: Box::new(Session {
                peer,
                sealer: Sealer::Tags(TagSealer::new(&s2c)),
                opener: Opener::Tags(TagOpener::new(&c2s)),
            }),
        },
        Mode::Noise => {
            let psk = derive(secret, "noise-psk", mode, ns, &nc);
            let Some(msg) = noise1 else {
                return refuse(MALFORMED, "malformed answer");
            };
            match noise::respond(&psk, &prologue(mode, ns, &nc), &msg) {
                Ok((reply, sealer, opener)) => Verdict::Accept {
                    line: line(&[PREFIX, "ok", &server_proof, &hex(&reply)]),
                    session: Box::new(Session {
                        peer,
                        sealer: Sealer::Noise(sealer),
                        opener: Opener::Noise(opener),
                    }),
                },
                Err(_) => refuse(MALFORMED, "malformed answer"),
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The client's side of one handshake.
#[derive(Debug)]
pub(crate) struct ClientHandshake {
    secret: Secret,
    mode: Mode,
    peer: SocketAddr,
    stage: Stage,
}

#[derive(Debug)]
enum Stage {
    Challenge,
    Verdict {
        ns: Vec<u8>,
        nc: [u8; 32],
        noise: Option<Box<Initiator>>,
    },
    Done,
}

/// What the client does after a line of the server's.
#[derive(Debug)]
pub(crate) enum Step {
    /// Send this line (the answer), then wait for the verdict.
    Send(Vec<u8>),
    /// Authenticated: the session's halves.
    Done(Box<Session>),
}

impl ClientHandshake {
    pub(crate) fn new(secret: Secret, encrypt: bool, peer: SocketAddr) -> Self {
        ClientHandshake {
            secret,
            mode: if encrypt { Mode::Noise } else { Mode::Tag },
            peer,
            stage: Stage::Challenge,
        }
    }

    fn fail(&self, reason: AuthFailure) -> Error {
        Error::Auth {
            addr: self.peer,
            reason,
        }
    }

    /// The next line from the server (without `\n`).
    pub(crate) fn on_line(&mut self, got: &[u8]) -> Result<Step, Error> {
        match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Challenge => self.on_challenge(got),
            Stage::Verdict { ns, nc, noise } => self.on_verdict(got, &ns, &nc, noise),
            Stage::Done => Err(self.fail(AuthFailure::Protocol(
                "a line after the handshake ended".into(),
            ))),
        }
    }

    fn on_challenge(&mut self, got: &[u8]) -> Result<Step, Error> {
        let words: Vec<&[u8]> = got.split(|&b| b == b' ').collect();
        let ns = match words.as_slice() {
            [p, b"challenge", ns] if *p == PREFIX.as_bytes() => unhex(ns).filter(|n| n.len() == 32),
            _ => None,
        };
        let Some(ns) = ns else {
            let reason = if got.starts_with(ANY_VERSION) {
                AuthFailure::Protocol(format!(
                    "the server's challenge is not {PREFIX}'s: {}",
                    quote(got)
                ))
            } else {
                AuthFailure::NoChallenge
            };
            return Err(self.fail(reason));
        };
        let nc = nonce().map_err(|e| Error::io("getrandom", e))?;
        let mode = self.mode;
        let proof = hex(&derive(&self.secret, "client-proof", mode, &ns, &nc));
        let (noise, answer) = match mode {
            Mode::Tag => (
                None,
                line(&[PREFIX, "answer", mode.word(), &hex(&nc), &proof]),
            ),
            Mode::Noise => {
                let psk = derive(&self.secret, "noise-psk", mode, &ns, &nc);
                let (init, msg) = Initiator::start(&psk, &prologue(mode, &ns, &nc))
                    .map_err(|e| self.fail(AuthFailure::Protocol(e)))?;
                let words = [PREFIX, "answer", mode.word(), &hex(&nc), &proof, &hex(&msg)];
                (Some(Box::new(init)), line(&words))
            }
        };
        self.stage = Stage::Verdict { ns, nc, noise };
        Ok(Step::Send(answer))
    }

    fn on_verdict(
        &mut self,
        got: &[u8],
        ns: &[u8],
        nc: &[u8; 32],
        noise: Option<Box<Initiator>>,
    ) -> Result<Step, Error> {
        let words: Vec<&[u8]> = got.split(|&b| b == b' ').collect();
        let (proof, noise2) = match words.as_slice() {
            [p, b"refused", word] if *p == PREFIX.as_bytes() => {
                return Err(self.fail(match *word {
                    w if w == WRONG_SECRET.as_bytes() => AuthFailure::WrongSecret,
                    w if w == ENCRYPTION_REQUIRED.as_bytes() => AuthFailure::EncryptionRequired,
                    w => AuthFailure::Refused(String::from_utf8_lossy(w).into_owned()),
                }));
            }
            [p, b"ok", proof, rest @ ..] if *p == PREFIX.as_bytes() && rest.len() <= 1 => {
                (unhex(proof), rest.first().and_then(|n| unhex(n)))
            }
            _ => (None, None),
        };
        let Some(proof) = proof else {
            return Err(self.fail(AuthFailure::Protocol(format!(
                "expected the server's verdict, got {}",
                quote(got)
            ))));
        };
        let mode = self.mode;
        let expected = derive(&self.secret, "server-proof", mode, ns, nc);
        if !constant_time_eq(&expected, &proof) {
            return Err(self.fail(AuthFailure::ServerUnproven));
        }
        let c2s = derive(&self.secret, "client-to-server", mode, ns, nc);
        let s2c = derive(&self.secret, "server-to-client", mode, ns, nc);
        let (sealer, opener) = match (noise, noise2) {
            (None, _) => (
                Sealer::Tags(TagSealer::new(&c2s)),
                Opener::Tags(TagOpener::new(&s2c)),
            ),
            (Some(init), Some(msg)) => {
                let (s, o) = init
                    .finish(&msg)
                    .map_err(|_| self.fail(AuthFailure::ServerUnproven))?;
                (Sealer::Noise(s), Opener::Noise(o))
            }
            (Some(_), None) => {
                return Err(self.fail(AuthFailure::Protocol(
                    "the server's verdict has no Noise message (does it speak encryption?)".into(),
                )))
            }
        };
        Ok(Step::Done(Box::new(Session {
            peer: self.peer,
            sealer,
            opener,
        })))
    }

    /// The error for a server that closed the connection mid-handshake.
    pub(crate) fn closed(&self) -> Error {
        let what = match self.stage {
            Stage::Challenge => {
                "closed the connection before its challenge (at its connection limit?)"
            }
            _ => "closed the connection without a verdict",
        };
        self.fail(AuthFailure::Refused(what.into()))
    }

    /// The error for a handshake whose deadline passed.
    pub(crate) fn timed_out(&self) -> Error {
        match self.stage {
            Stage::Challenge => self.fail(AuthFailure::NoChallenge),
            _ => self.fail(AuthFailure::Refused(
                "no verdict on our answer before the deadline".into(),
            )),
        }
    }
}

/// A line's first 80 bytes, for an error.
fn quote(line: &[u8]) -> String {
    let cut = &line[..line.len().min(80)];
    format!("{:?}", String::from_utf8_lossy(cut))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::new(s.as_bytes().to_vec()).expect("secret")
    }

    fn addr() -> SocketAddr {
        "127.0.0.1:9".parse().expect("addr")
    }

    fn strip(l: &[u8]) -> &[u8] {
        l.strip_suffix(b"\n").unwrap_or(l)
    }

    fn run(
        client: &Secret,
        server: &Secret,
        encrypt: bool,
        require: bool,
    ) -> Result<(Box<Session>, Box<Session>), Error> {
        let (ns, ch) = challenge().expect("nonce");
        let mut c = ClientHandshake::new(client.clone(), encrypt, addr());
        let Step::Send(answer) = c.on_line(strip(&ch))? else {
            panic!("an answer")
        };
        match judge(server, &ns, strip(&answer), require, addr()) {
            Verdict::Accept { line, session } => match c.on_line(strip(&line))? {
                Step::Done(mine) => Ok((mine, session)),
                Step::Send(_) => panic!("done"),
            },
            Verdict::Refuse { line, .. } => match c.on_line(strip(&line)) {
                Err(e) => Err(e),
                Ok(_) => panic!("a refusal is an error"),
            },
        }
    }

    #[test]
    fn the_same_secret_gives_both_sides_matching_keys_in_both_modes() {
        let s = secret("one shared secret here");
        for encrypt in [false, true] {
            let (mut c, mut srv) = run(&s, &s, encrypt, false).expect("authenticated");
            let mut out = Vec::new();
            let mut scratch = Vec::new();
            let mark = c.sealer.begin(&mut out);
            out.extend_from_slice(b"{\"q\": 1}\n");
            c.sealer.seal(&mut out, mark, &mut scratch);
            let got = match &mut srv.opener {
                Opener::Tags(t) => t.open(strip(&out)).expect("verifies").to_vec(),
                Opener::Noise(n) => {
                    let mut g = Vec::new();
                    n.open(&out, |p| g.extend_from_slice(p)).expect("decrypts");
                    g
                }
            };
            assert_eq!(strip(&got), b"{\"q\": 1}");
        }
    }

    #[test]
    fn verdicts_name_their_cause() {
        let s = secret("one shared secret here");
        let other = secret("another shared secret");
        let reason = |r: Result<(Box<Session>, Box<Session>), Error>| match r {
            Err(Error::Auth { reason, .. }) => reason,
            other => panic!("expected an auth error, got {other:?}"),
        };
        assert_eq!(
            reason(run(&other, &s, false, false)),
            AuthFailure::WrongSecret
        );
        assert_eq!(
            reason(run(&s, &s, false, true)),
            AuthFailure::EncryptionRequired
        );

        // A server that is not miniray's, or has no secret: no challenge.
        let mut c = ClientHandshake::new(s.clone(), false, addr());
        assert!(matches!(
            c.on_line(b"{\"x\": 1}"),
            Err(Error::Auth {
                reason: AuthFailure::NoChallenge,
                ..
            })
        ));
        // An impostor that relays the challenge but forges the verdict.
        let (ns, ch) = challenge().expect("nonce");
        let mut c = ClientHandshake::new(s.clone(), false, addr());
        let Ok(Step::Send(answer)) = c.on_line(strip(&ch)) else {
            panic!("answer")
        };
        let forged = format!("{PREFIX} ok {}", hex(&[0u8; 32]));
        assert!(matches!(
            c.on_line(forged.as_bytes()),
            Err(Error::Auth {
                reason: AuthFailure::ServerUnproven,
                ..
            })
        ));
        // A changed mode is caught by the proof: a relay cannot downgrade.
        let downgraded = String::from_utf8_lossy(strip(&answer)).replace(" tag ", " noise ");
        assert!(matches!(
            judge(&s, &ns, downgraded.as_bytes(), false, addr()),
            Verdict::Refuse { .. }
        ));
        assert!(matches!(
            judge(&s, &ns, b"hello", false, addr()),
            Verdict::Refuse {
                reason: "malformed answer",
                ..
            }
        ));
    }
}
