use super::*;

fn fleet_specs(n: usize, types: &[&str], regions: &[&str]) -> Vec<TargetSpec> {
    (0..n)
        .map(|i| TargetSpec {
            id: format!("dev-{i:04}"),
            device_type: types[i % types.len()].to_string(),
            region: regions[(i / types.len()) % regions.len()].to_string(),
            flags: TargetFlags::default(),
            monitoring: (i % 7) as u8,
        })
        .collect()
}

fn baselines(types: &[&str]) -> HashMap<String, Baseline> {
    types
        .iter()
        .map(|t| {
            (
                t.to_string(),
                Baseline {
                    error_rate: 0.01,
                    p95_ms: 100.0,
                    memory_mb: 200.0,
                },
            )
        })
        .collect()
}

#[test]
fn all_at_once_is_refused_above_the_limit_unless_forced() {
    let types = ["pi"];
    let specs = fleet_specs(11, &types, &["eu"]);
    let cfg = StrategyConfig::defaults(Strategy::AllAtOnce);
    let err = Plan::new("a", cfg.clone(), specs.clone(), &baselines(&types), 1);
    let msg = err.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("11 devices refused") && msg.contains("at most 10"),
        "{msg}"
    );
    let mut forced = cfg;
    forced.force = true;
    assert!(Plan::new("a", forced, specs, &baselines(&types), 1).is_ok());
}

#[test]
fn canary_covers_every_type_and_region_and_skips_ineligible_devices() {
    let types = ["pi", "jetson", "gw"];
    let regions = ["eu", "us", "ap"];
    let mut specs = fleet_specs(300, &types, &regions);
    // The best-monitored pi is flaky, so it must not be chosen.
    specs[6].monitoring = 200;
    specs[6].flags.flaky_24h = true;
    let plan = Plan::new(
        "a",
        StrategyConfig::defaults(Strategy::CanaryWaves),
        specs,
        &baselines(&types),
        9,
    );
    let plan = match plan {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    // 300 devices: the table says 5-10, the share (3 %) caps at 9, the config at 10.
    assert!(
        (5..=9).contains(&plan.canary.len()),
        "{}",
        plan.canary.len()
    );
    assert!(!plan.canary.contains(&6));
    for t in 0..3u16 {
        assert!(
            plan.canary
                .iter()
                .any(|d| plan.device_type[*d as usize] == t)
        );
    }
    for r in 0..3u16 {
        assert!(
            plan.canary
                .iter()
                .any(|d| plan.device_region[*d as usize] == r)
        );
    }
    // Waves: ceil(15 % and 35 % of the pool), the last takes the rest.
    let pool = 300 - plan.canary.len();
    let sizes: Vec<u32> = plan.stages.iter().map(StageSpec::len).collect();
    assert_eq!(sizes[1] as usize, (pool as f64 * 0.15).ceil() as usize);
    assert_eq!(sizes[2] as usize, (pool as f64 * 0.35).ceil() as usize);
    assert_eq!(sizes.iter().sum::<u32>() as usize, 300);
    let mut all = plan.order.clone();
    all.sort_unstable();
    assert_eq!(all, (0..300).collect::<Vec<u32>>());
}

#[test]
fn canary_sizing_follows_the_table() {
    assert_eq!(canary_size_range(5), (1, 1));
    assert_eq!(canary_size_range(30), (2, 3));
    assert_eq!(canary_size_range(100), (3, 5));
    assert_eq!(canary_size_range(500), (5, 10));
    assert_eq!(canary_size_range(5000), (10, 50));
    let types = ["pi"];
    let plan = Plan::new(
        "a",
        StrategyConfig::defaults(Strategy::CanaryWaves),
        fleet_specs(5000, &types, &["eu"]),
        &baselines(&types),
        1,
    );
    assert_eq!(plan.map(|p| p.canary.len()).ok(), Some(10));
}

#[test]
fn no_eligible_canary_is_an_error() {
    let types = ["pi"];
    let mut specs = fleet_specs(4, &types, &["eu"]);
    for s in &mut specs {
        s.flags.maintenance = true;
    }
    let r = Plan::new(
        "a",
        StrategyConfig::defaults(Strategy::Canary),
        specs,
        &baselines(&types),
        1,
    );
    assert_eq!(r.err(), Some(PlanError::NoEligibleCanary));
}

#[test]
fn each_wave_gets_every_type_where_possible() {
    let types = ["pi", "jetson", "gw", "rare"];
    let mut specs = fleet_specs(400, &types[..3], &["eu"]);
    for s in specs.iter_mut().skip(50).take(3) {
        s.device_type = "rare".into();
    }
    let plan = Plan::new(
        "a",
        StrategyConfig::defaults(Strategy::CanaryWaves),
        specs,
        &baselines(&types),
        3,
    );
    let plan = match plan {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let rare = plan.types.iter().position(|t| t == "rare").unwrap_or(99) as u16;
    for s in &plan.stages[1..] {
        let has = plan.order[s.start as usize..s.end as usize]
            .iter()
            .any(|d| plan.device_type[*d as usize] == rare);
        // Three rare devices; one may be in the canary, so waves 1 and 2 need one each.
        if s.name != "wave-3" {
            assert!(has, "{} lacks the rare type", s.name);
        }
    }
}

#[test]
fn missing_baseline_and_bad_steps_are_refused() {
    let types = ["pi"];
    let r = Plan::new(
        "a",
        StrategyConfig::defaults(Strategy::Rolling),
        fleet_specs(3, &types, &["eu"]),
        &HashMap::new(),
        1,
    );
    assert_eq!(r.err(), Some(PlanError::MissingBaseline("pi".into())));
    let mut cfg = StrategyConfig::defaults(Strategy::Steps);
    cfg.steps = vec![5.0, 50.0, 25.0, 100.0];
    let r = Plan::new(
        "a",
        cfg,
        fleet_specs(3, &types, &["eu"]),
        &baselines(&types),
        1,
    );
    assert!(matches!(r, Err(PlanError::Config { field: "steps", .. })));
}
