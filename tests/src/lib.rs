//! Helpers shared by the end-to-end tests: locating the workspace's binaries, temp data dirs,
//! free loopback ports and a real Mosquitto broker.
pub mod fleet;
pub mod netns;
