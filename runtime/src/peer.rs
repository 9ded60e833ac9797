//! Who is calling on the control socket, as the kernel tells it, and who may change anything.
//!
//! The control socket (`floed.sock`, mode 0660) is reachable by root, the daemon's user and the
//! socket's group. Reading the status is open to all of them. Installing and rolling back are
//! allowed only to root, the daemon's own user and members of the configured
//! `operator_group`. The caller's identity is read from the connection with `SO_PEERCRED`
//! (tokio's `UnixStream::peer_cred`), never from the request, and the audit log records it as
//! `local:uid=<uid>(<name>)`.

use std::ffi::CString;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use nix::unistd::{Gid, Group, Uid, User};
use tokio::net::UnixListener;

/// The caller of one control-socket connection, from `SO_PEERCRED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The caller's user id.
    pub uid: u32,
    /// The caller's primary group id.
    pub gid: u32,
}

impl Caller {
    /// The calling process of this program itself (for commands that run in-process).
    pub fn this_process() -> Caller {
        Caller {
            uid: Uid::current().as_raw(),
            gid: Gid::current().as_raw(),
        }
    }

    /// The audit actor for this caller: `local:uid=<uid>(<user name>)`. The name comes from
    /// the user database; it is only decoration, the uid is what counts.
    pub fn actor(&self) -> String {
        match User::from_uid(Uid::from_raw(self.uid)) {
            Ok(Some(u)) => format!("local:uid={}({})", self.uid, u.name),
            _ => format!("local:uid={}", self.uid),
        }
    }
}

/// The connection's peer credentials as axum connect info; `None` when the kernel gave none.
#[derive(Debug, Clone, Copy)]
pub struct PeerCred(pub Option<Caller>);

impl Connected<IncomingStream<'_, UnixListener>> for PeerCred {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        PeerCred(stream.io().peer_cred().ok().map(|c| Caller {
            uid: c.uid(),
            gid: c.gid(),
        }))
    }
}

/// Why a group name could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The configured operator group does not exist.
    #[error("config key `operator_group`: no group named {0:?} on this system")]
    NoSuchGroup(String),
    /// The group database could not be read.
    #[error("looking up group {name:?}: {source}")]
    Lookup {
        /// The group name.
        name: String,
        /// The error.
        source: nix::Error,
    },
}

/// Who may change the device over the control socket.
#[derive(Debug, Clone)]
pub struct ControlPolicy {
    daemon_uid: u32,
    operator_gid: Option<u32>,
}

impl ControlPolicy {
    /// The policy of a daemon running as the current user, with `operator_group` (a group
    /// name, resolved now) or none.
    pub fn new(operator_group: Option<&str>) -> Result<ControlPolicy, PolicyError> {
        let operator_gid = match operator_group {
            None => None,
            Some(name) => match Group::from_name(name) {
                Ok(Some(g)) => Some(g.gid.as_raw()),
                Ok(None) => return Err(PolicyError::NoSuchGroup(name.to_string())),
                Err(source) => {
                    return Err(PolicyError::Lookup {
                        name: name.to_string(),
                        source,
                    });
                }
            },
        };
        Ok(ControlPolicy {
            daemon_uid: Uid::current().as_raw(),
            operator_gid,
        })
    }

    /// A policy with explicit ids (tests).
    pub fn with_ids(daemon_uid: u32, operator_gid: Option<u32>) -> ControlPolicy {
        ControlPolicy {
            daemon_uid,
            operator_gid,
        }
    }

    /// Whether `caller` may install or roll back: root, the daemon's own user, or a member
    /// (primary or supplementary) of the operator group.
    pub fn may_change(&self, caller: &Caller) -> bool {
        if caller.uid == 0 || caller.uid == self.daemon_uid {
            return true;
        }
        let Some(gid) = self.operator_gid else {
            return false;
        };
        if caller.gid == gid {
            return true;
        }
        // Supplementary groups are not in SO_PEERCRED; read them from the group database for
        // the caller's user.
        let Ok(Some(user)) = User::from_uid(Uid::from_raw(caller.uid)) else {
            return false;
        };
        let Ok(name) = CString::new(user.name) else {
            return false;
        };
        nix::unistd::getgrouplist(&name, Gid::from_raw(caller.gid))
            .map(|groups| groups.iter().any(|g| g.as_raw() == gid))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_the_daemon_user_and_the_operator_group_may_change() {
        let p = ControlPolicy::with_ids(500, Some(600));
        assert!(p.may_change(&Caller { uid: 0, gid: 0 }));
        assert!(p.may_change(&Caller { uid: 500, gid: 1 }));
        assert!(p.may_change(&Caller {
            uid: 4242,
            gid: 600
        }));
        assert!(!p.may_change(&Caller {
            uid: 4242,
            gid: 4242
        }));
        let none = ControlPolicy::with_ids(500, None);
        assert!(!none.may_change(&Caller {
            uid: 4242,
            gid: 600
        }));
    }

    #[test]
    fn the_actor_is_the_uid() {
        let a = Caller { uid: 0, gid: 0 }.actor();
        assert!(a.starts_with("local:uid=0"), "{a}");
        assert_eq!(
            Caller {
                uid: 4_000_000_000,
                gid: 0
            }
            .actor(),
            "local:uid=4000000000"
        );
    }
}
