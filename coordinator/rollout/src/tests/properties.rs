//! Properties over random plans and fleets: the simulator's invariants and "same state, same
//! future" across a serde round trip.

use super::*;

/// A deterministic responder with failures and offline devices chosen by hash.
fn chaos_responder(seed: u64) -> Responder {
    Box::new(move |d, kind, _| {
        let h = (u64::from(d) ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56;
        match kind {
            DirectiveKind::Stage if h < 8 => vec![dev(d, DeviceEvent::Failed)],
            DirectiveKind::Stage if h < 16 => vec![dev(d, DeviceEvent::Offline)],
            DirectiveKind::Stage => vec![dev(d, DeviceEvent::Staged)],
            DirectiveKind::Switch if h < 20 => vec![
                dev(d, DeviceEvent::Switched),
                dev(d, DeviceEvent::Unhealthy),
            ],
            DirectiveKind::Switch => vec![
                dev(d, DeviceEvent::Switched),
                Input::Health {
                    device: d,
                    report: good(),
                },
            ],
            DirectiveKind::Rollback => vec![dev(d, DeviceEvent::RolledBack)],
            DirectiveKind::Commit => vec![],
        }
    })
}

fn strategy_of(i: u8) -> Strategy {
    Strategy::ALL[usize::from(i) % Strategy::ALL.len()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// The simulator's invariants: bounded parallelism, no wave after a failed canary, every
    /// device terminal, and the same seed giving the same actions.
    #[test]
    fn simulated_runs_keep_the_invariants(
        n in 1usize..160,
        s in 0u8..6,
        fail in 0.0f64..0.2,
        offline in 0.0f64..0.2,
        seed in 0u64..1000,
    ) {
        let strategy = strategy_of(s);
        let mut cfg = SimConfig::new(n, strategy);
        cfg.strategy.force = true;
        cfg.fail_rate = fail;
        cfg.offline_rate = offline;
        cfg.seed = seed;
        cfg.max_resumes = 1;
        let out = match sim::run(&cfg) {
            Ok(o) => o,
            Err(sim::SimError::Plan(crate::PlanError::NoEligibleCanary)) => return Ok(()),
            Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
        };
        let limit = match cfg.strategy.max_parallel { 0 => u32::MAX, m => m };
        prop_assert!(out.max_in_flight <= limit, "{} in flight > {}", out.max_in_flight, limit);
        prop_assert!(!out.stage_after_failed_canary);
        prop_assert!(out.rollout.status().is_terminal(), "{:?} {:?}", out.rollout.status(), out.rollout.pause_reason());
        for d in 0..n as u32 {
            let st = out.rollout.target_status(d);
            prop_assert!(st.is_some_and(TargetStatus::is_terminal), "device {} ends {:?}", d, st);
        }
        let again = sim::run(&cfg).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(out.action_digest, again.action_digest);
        prop_assert_eq!(out.actions, again.actions);
    }

    /// Serialize → deserialize at any step gives the same future.
    #[test]
    fn state_survives_a_round_trip_at_any_step(
        n in 2usize..60,
        s in 0u8..6,
        cut in 0usize..120,
        seed in 0u64..1000,
    ) {
        let mut cfg = StrategyConfig::defaults(strategy_of(s));
        cfg.force = true;
        cfg.require_approval = false;
        cfg.max_parallel = cfg.max_parallel.min(7);
        let targets = (0..n).map(|i| TargetSpec {
            id: format!("d{i}"),
            device_type: TYPES[i % 2].to_string(),
            region: "eu".to_string(),
            flags: TargetFlags::default(),
            monitoring: 1,
        });
        let plan = Plan::new("a", cfg, targets, &baselines(), seed).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        // Reference run, with a snapshot taken after `cut` ticks.
        let mut a = H { r: Rollout::new(plan, 0), now: 0, log: Vec::new(), respond: chaos_responder(seed), max_in_flight: 0, report_every: 0, next_round: 0, last: Vec::new(), reporter: None };
        prop_assert!(a.cmd(Command::Start).is_ok());
        let mut snapshot: Option<(String, Millis, usize)> = None;
        let mut ticks = 0usize;
        loop {
            if ticks == cut {
                let bytes = serde_json::to_string(&a.r).map_err(|e| TestCaseError::fail(e.to_string()))?;
                snapshot = Some((bytes, a.now, a.log.len()));
            }
            let Some(t) = a.r.poll_timeout() else { break };
            a.now = a.now.max(t);
            prop_assert!(a.send(Input::Tick).is_ok());
            ticks += 1;
            prop_assert!(ticks < 100_000, "livelock");
        }
        let Some((bytes, now, logged)) = snapshot else { return Ok(()) };
        let restored: Rollout = serde_json::from_str(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut b = H { r: restored, now, log: Vec::new(), respond: chaos_responder(seed), max_in_flight: 0, report_every: 0, next_round: 0, last: Vec::new(), reporter: None };
        while let Some(t) = b.r.poll_timeout() {
            b.now = b.now.max(t);
            prop_assert!(b.send(Input::Tick).is_ok());
        }
        prop_assert_eq!(&a.log[logged..], &b.log[..]);
        prop_assert_eq!(a.r, b.r);
    }
}
