//! 001's canary sizing table row by row, each exclusion, coverage by type and region, the
//! monitoring order, the warnings a plan states, and blue-green's layout in waves.

use super::*;

/// `n` devices over `types` (round-robin) and `regions` (round-robin over blocks of a type
/// cycle), all eligible, monitoring 50.
fn specs(n: usize, types: &[&str], regions: &[&str]) -> Vec<TargetSpec> {
    (0..n)
        .map(|i| TargetSpec {
            id: format!("dev-{i:06}"),
            device_type: types[i % types.len()].to_string(),
            region: regions[(i / types.len()) % regions.len()].to_string(),
            flags: TargetFlags::default(),
            monitoring: 50,
        })
        .collect()
}

fn plan(strategy: Strategy, targets: Vec<TargetSpec>) -> Plan {
    let mut cfg = StrategyConfig::defaults(strategy);
    cfg.health_check = false;
    plan_with(cfg, targets)
}

fn plan_with(cfg: StrategyConfig, targets: Vec<TargetSpec>) -> Plan {
    match Plan::new("a", cfg, targets, &HashMap::new(), 7) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn canary_types(p: &Plan) -> std::collections::BTreeSet<&str> {
    p.canary
        .iter()
        .map(|d| p.types[p.device_type[*d as usize] as usize].as_str())
        .collect()
}

fn canary_regions(p: &Plan) -> std::collections::BTreeSet<&str> {
    p.canary
        .iter()
        .map(|d| p.regions[p.device_region[*d as usize] as usize].as_str())
        .collect()
}

#[test]
fn the_table_rows_and_their_boundaries() {
    for (n, range) in [
        (1, (1, 1)),
        (9, (1, 1)),
        (10, (2, 3)),
        (49, (2, 3)),
        (50, (3, 5)),
        (199, (3, 5)),
        (200, (5, 10)),
        (999, (5, 10)),
        (1000, (10, 50)),
        (5000, (10, 50)),
        (5001, (51, 100)),
        (100_000, (1000, 2000)),
    ] {
        assert_eq!(canary_size_range(n), range, "{n} devices");
    }
}

#[test]
fn each_table_row_sizes_a_one_type_canary() {
    // canary-waves: 3 % inside the table's range, canary_max 10 never below the minimum.
    for (n, want) in [
        (5, 1),
        (30, 2),
        (100, 3),
        (500, 10),
        (3000, 10),
        (20_000, 200),
    ] {
        let p = plan(Strategy::CanaryWaves, specs(n, &["pi"], &["eu"]));
        assert_eq!(p.canary.len(), want, "canary-waves, {n} devices");
        assert_eq!(p.canary_picks.len(), want);
    }
    // 000 canary: 10 %, no maximum: the table's maximum bounds the share.
    for (n, want) in [
        (5, 1),
        (30, 3),
        (100, 5),
        (500, 10),
        (3000, 50),
        (20_000, 400),
    ] {
        let p = plan(Strategy::Canary, specs(n, &["pi"], &["eu"]));
        assert_eq!(p.canary.len(), want, "canary, {n} devices");
    }
    // The share picks inside the range: 1 % of 100 is below the minimum of 3.
    let mut cfg = StrategyConfig::defaults(Strategy::Canary);
    cfg.health_check = false;
    cfg.canary_percent = 1.0;
    assert_eq!(canary_target(&cfg, 100), 3);
    cfg.canary_min = 4;
    assert_eq!(canary_target(&cfg, 100), 4);
    cfg.canary_max = 1;
    assert_eq!(
        canary_target(&cfg, 100),
        3,
        "canary_max never below the table"
    );
}

#[test]
fn forty_devices_of_three_types_get_one_canary_per_type() {
    let p = plan(
        Strategy::CanaryWaves,
        specs(40, &["pi", "jetson", "gw"], &["eu"]),
    );
    assert_eq!(p.canary.len(), 3, "table 2-3, one per type");
    assert_eq!(canary_types(&p).len(), 3);
    assert!(
        p.canary_picks
            .iter()
            .all(|c| c.reason == CanaryReason::DeviceType)
    );
}

#[test]
fn the_twelve_device_demo_fleet_of_two_types_gets_one_per_type() {
    for strategy in [Strategy::Canary, Strategy::CanaryWaves, Strategy::BlueGreen] {
        let mut cfg = StrategyConfig::defaults(strategy);
        cfg.health_check = false;
        cfg.canary_percent = 10.0;
        let p = plan_with(cfg, specs(12, &["rpi4", "jetson"], &["eu", "us"]));
        assert!(p.canary.len() >= 2, "{strategy:?}: {}", p.canary.len());
        assert_eq!(canary_types(&p).len(), 2, "{strategy:?}");
        assert_eq!(canary_regions(&p).len(), 2, "{strategy:?}");
    }
}

#[test]
fn regions_not_covered_by_the_type_picks_get_one_device_each() {
    // One type over four regions; "ap" has a single, poorly monitored device.
    let mut t = specs(60, &["pi"], &["eu", "us", "sa"]);
    for s in &mut t {
        s.monitoring = 90;
    }
    t[59].region = "ap".into();
    t[59].monitoring = 1;
    let p = plan(Strategy::CanaryWaves, t);
    assert_eq!(canary_regions(&p).len(), 4, "{:?}", canary_regions(&p));
    let ap = p.canary.iter().position(|d| *d == 59);
    let Some(ap) = ap else {
        panic!("the only ap device is not in the canary: {:?}", p.canary)
    };
    assert_eq!(p.canary_picks[ap].reason, CanaryReason::Region);
    // Table 3-5 for 60 devices; one type pick and three region picks make 4.
    assert_eq!(p.canary.len(), 4);
}

#[test]
fn the_best_monitored_device_of_each_type_is_picked_first() {
    let mut t = specs(100, &["pi", "jetson"], &["eu"]);
    for (i, s) in t.iter_mut().enumerate() {
        s.monitoring = (i % 50) as u8;
    }
    t[37].monitoring = 200; // a jetson
    t[64].monitoring = 199; // a pi
    let p = plan(Strategy::CanaryWaves, t);
    assert!(
        p.canary.contains(&37) && p.canary.contains(&64),
        "{:?}",
        p.canary
    );
    assert_eq!(p.canary_picks[0].monitoring, 199, "the larger type first");
    // The fill takes the next best of each type, never a worse one before a better one.
    let mons: Vec<u8> = p.canary_picks.iter().map(|c| c.monitoring).collect();
    assert_eq!(p.canary.len(), 3, "table 3-5 and 3 % of 100 is 3");
    assert_eq!(mons[2], 48, "the next best pi: {mons:?}");
}

#[test]
fn every_exclusion_keeps_its_device_out_of_the_canary() {
    type Set = fn(&mut TargetFlags);
    let flags: [(&str, Set); 5] = [
        ("maintenance", |f| f.maintenance = true),
        ("quarantined", |f| f.quarantined = true),
        ("known hardware issues", |f| f.known_issues = true),
        ("connectivity problems", |f| f.flaky_24h = true),
        ("single points of failure", |f| {
            f.single_point_of_failure = true
        }),
    ];
    for (what, set) in flags {
        let mut t = specs(30, &["pi"], &["eu"]);
        t[4].monitoring = 255;
        set(&mut t[4].flags);
        let p = plan(Strategy::CanaryWaves, t);
        assert!(!p.canary.contains(&4), "{what}: {:?}", p.canary);
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("1 of 30 devices are not eligible") && w.contains(what)),
            "{what}: {:?}",
            p.warnings
        );
    }
}

#[test]
fn a_type_with_every_device_excluded_is_a_stated_fact_not_an_error() {
    let mut t = specs(30, &["pi", "jetson", "gw"], &["eu"]);
    for s in t.iter_mut().filter(|s| s.device_type == "gw") {
        s.flags.known_issues = true;
    }
    let p = plan(Strategy::CanaryWaves, t);
    assert!(!canary_types(&p).contains("gw"));
    assert_eq!(p.canary_gaps(), (vec!["gw"], vec![]));
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("device type \"gw\" has no eligible canary device")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn coverage_beyond_the_table_maximum_is_kept_and_said() {
    let p = plan(
        Strategy::CanaryWaves,
        specs(20, &["a", "b", "c", "d", "e"], &["eu"]),
    );
    assert_eq!(p.canary.len(), 5, "five types, none dropped");
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("5 devices, more than the 3 001's sizing table recommends")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn a_small_canary_max_below_the_table_is_said() {
    let p = plan(Strategy::CanaryWaves, specs(20_000, &["pi"], &["eu"]));
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("canary_max 10 is below the 200 devices")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn a_hundred_thousand_targets_plan_in_linear_time() {
    let types: Vec<String> = (0..40).map(|i| format!("type-{i}")).collect();
    let regions: Vec<String> = (0..25).map(|i| format!("region-{i}")).collect();
    let t: Vec<TargetSpec> = (0..100_000usize)
        .map(|i| TargetSpec {
            id: format!("dev-{i:06}"),
            device_type: types[i % 40].clone(),
            region: regions[(i / 40) % 25].clone(),
            flags: TargetFlags {
                flaky_24h: i % 97 == 0,
                ..TargetFlags::default()
            },
            // Ascending monitoring: the worst order for a kept-best list.
            monitoring: (i * 255 / 100_000) as u8,
        })
        .collect();
    let started = std::time::Instant::now();
    let p = plan(Strategy::CanaryWaves, t);
    let took = started.elapsed();
    assert_eq!(p.canary.len(), 1000, "1 % of 100 000");
    assert_eq!(canary_types(&p).len(), 40);
    assert_eq!(canary_regions(&p).len(), 25);
    assert!(p.canary.iter().all(|d| d % 97 != 0));
    println!("plan of 100 000 targets: {took:?}");
    // Unoptimised test builds on a shared machine: generous, but far below what a quadratic
    // selection (10^8 list moves and more) would take.
    assert!(took.as_secs() < 20, "{took:?}");
}

#[test]
fn blue_green_stages_everything_then_switches_the_canary_then_waves() {
    let p = plan(Strategy::BlueGreen, specs(200, &["pi", "jetson"], &["eu"]));
    let kinds: Vec<(StageKind, StageMode, u32)> =
        p.stages.iter().map(|s| (s.kind, s.mode, s.len())).collect();
    assert_eq!(
        kinds[0],
        (StageKind::BlueGreenStage, StageMode::StageOnly, 200)
    );
    assert_eq!(kinds[1].0, StageKind::Canary);
    assert_eq!(kinds[1].1, StageMode::SwitchOnly);
    assert_eq!(kinds[1].2 as usize, p.canary.len());
    assert_eq!(p.stages[1].gate, GateKind::Canary);
    let waves = &p.stages[2..];
    assert_eq!(waves.len(), 3, "{kinds:?}");
    for w in waves {
        assert_eq!(
            (w.kind, w.mode, w.gate),
            (StageKind::Wave, StageMode::SwitchOnly, GateKind::Wave)
        );
        assert!(w.len() < 200, "never the whole fleet in one switch");
        assert_eq!(w.on_breach, Breach::RollbackStageAndHalt);
    }
    assert_eq!(
        waves.iter().map(StageSpec::len).sum::<u32>() as usize + p.canary.len(),
        200
    );
    assert_eq!(waves[0].soak, 15 * crate::MINUTE);
    assert!(p.warnings.iter().all(|w| !w.contains("500 devices")));
    let big = plan(Strategy::BlueGreen, specs(501, &["pi"], &["eu"]));
    assert!(
        big.warnings
            .iter()
            .any(|w| w.contains("\"Fleets larger than 500 devices (coordination overhead)\"")),
        "{:?}",
        big.warnings
    );
}

#[test]
fn a_full_share_stops_at_the_table_and_canary_min_raises_it() {
    // One type over six regions: a 100 % share is cut to the table's 5, but the six region
    // picks stay; canary_min 9 adds three more.
    let mut t = specs(100, &["pi"], &["r0", "r1", "r2", "r3", "r4", "r5"]);
    for (i, s) in t.iter_mut().enumerate() {
        s.monitoring = 200 - i as u8;
    }
    let mut cfg = StrategyConfig::defaults(Strategy::Canary);
    cfg.health_check = false;
    cfg.canary_percent = 100.0;
    let p = plan_with(cfg, t);
    assert_eq!(p.canary.len(), 6, "six regions, more than the table's 5");
    let mut cfg = StrategyConfig::defaults(Strategy::Canary);
    cfg.health_check = false;
    cfg.canary_min = 9;
    let t = specs(100, &["pi"], &["r0", "r1", "r2", "r3", "r4", "r5"]);
    let p = plan_with(cfg, t);
    assert_eq!(p.canary.len(), 9, "canary_min 9 reached");
}

#[test]
fn the_canary_never_takes_the_whole_fleet() {
    // Three devices, three regions: coverage alone would take all three.
    let p = plan(
        Strategy::CanaryWaves,
        specs(3, &["pi"], &["eu", "us", "ap"]),
    );
    assert_eq!(p.canary.len(), 2, "{:?}", p.warnings);
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("the pick for region \"ap\" stays out")),
        "{:?}",
        p.warnings
    );
    assert_eq!(
        p.stages.len(),
        2,
        "the third device is a wave: {:?}",
        p.stages
    );
    assert_eq!(p.canary_gaps(), (vec![], vec!["ap"]));
    // One device is its own canary.
    assert_eq!(
        plan(Strategy::CanaryWaves, specs(1, &["pi"], &["eu"]))
            .canary
            .len(),
        1
    );
}
