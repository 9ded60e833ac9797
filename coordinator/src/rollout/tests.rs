//! Scenario and property tests of the rollout engine.
