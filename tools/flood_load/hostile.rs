//! `--mode hostile`: a normal open-loop load alone, then the same load while
//! the attackers of [`crate::attack`] run; the normal clients' p99 in both
//! phases, and their ratio.

use std::io;

use crate::attack;
use crate::hist::us;
use crate::load;
use crate::opts::{run_prefix, spec, Opts, DEFAULT_ADDR};
use crate::report::{describe_load, print_outcome};

/// Runs the mode and prints its report.
pub fn run(o: &Opts) -> io::Result<()> {
    let s = spec(o, DEFAULT_ADDR, 5_000.0);
    let mut s = s;
    if o.inflight == 1 {
        s.inflight = 8;
    }
    println!("flood_load hostile: normal clients: {}", describe_load(&s));
    println!("phase 1: normal clients alone");
    let quiet = load::run_rr(&s, !o.quiet)?;
    print_outcome("replies", &quiet);
    println!(
        "phase 2: the same, while attackers run at {} MB/s per connection{}",
        o.attack_mbps,
        if o.attack_mbps <= 0.0 {
            " (flat out)"
        } else {
            ""
        }
    );
    let attack = attack::Attack::start(s.addr, o.sources, o.attack_mbps, o.attackers)?;
    let mut s2 = s.clone();
    s2.prefix = run_prefix() + "b";
    let loud = load::run_rr(&s2, !o.quiet);
    let report = attack.stop();
    let loud = loud?;
    print_outcome("replies", &loud);
    println!("attackers   {report}");
    let ratio = loud.iamat.quantile(0.99) as f64 / quiet.iamat.quantile(0.99).max(1) as f64;
    println!(
        "p99         {} us alone, {} us under attack ({ratio:.2}x)",
        us(quiet.iamat.quantile(0.99)),
        us(loud.iamat.quantile(0.99))
    );
    println!(
        "summary mode=hostile rate={:.0} quiet_p99_us={} hostile_p99_us={} p99_ratio={ratio:.2} hostile_rate={:.0} {} errors={}",
        quiet.rate(),
        us(quiet.iamat.quantile(0.99)),
        us(loud.iamat.quantile(0.99)),
        loud.rate(),
        loud.iamat.summary_fields("hostile_"),
        quiet.errors + loud.errors
    );
    Ok(())
}
