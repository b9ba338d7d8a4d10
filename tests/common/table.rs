//! Runs op-table cases on a backend and compares every output with the independent reference
//! (the fixture's float64 torch / upstream values) and, for a backend other than the CPU, with the
//! CPU backend's result. Prints, per row, the largest error and how much of the tolerance it
//! used, so a tolerance far above the error (or a loosening) shows in the log.

use ran::optable::compare::compare;
use ran::optable::{entries_for, run_method, Inputs, OpCase, Tol};
use ran::{Backend, Cpu};
use std::collections::BTreeMap;

#[derive(Default)]
pub struct Report {
    pub failures: Vec<String>,
    pub comparisons: usize,
    /// per row: (comparisons, largest error, largest share of the tolerance used, its tolerance)
    pub rows: BTreeMap<&'static str, (usize, f64, f64, Tol)>,
    /// (case, output) pairs computed
    pub computed: Vec<(String, String)>,
}

impl Report {
    pub fn print(&self, label: &str) {
        println!("{label}: {} comparisons, {} failures", self.comparisons, self.failures.len());
        for (m, (n, err, used, t)) in &self.rows {
            println!("  {m:<30} {n:>4} cmp  max err {err:9.2e}  uses {:5.1}% of tolerance (atol {:.0e} rtol {:.0e} at the worst case)", 100.0 * used, t.atol, t.rtol);
        }
    }
}

/// Runs every row of every case on `b`; `atol_scale` widens the absolute tolerance (a real GPU's
/// FMA contraction and math library).
pub fn check_cases<B: Backend>(b: &B, label: &str, cases: &[OpCase], atol_scale: f64) -> Report {
    let against_cpu = b.name() != Cpu.name();
    let mut r = Report::default();
    for c in cases {
        let inputs = match Inputs::load(b, c) {
            Ok(i) => i,
            Err(e) => {
                r.failures.push(format!("[{label}] {}: loading inputs: {e}", c.name));
                continue;
            }
        };
        let cpu_inputs = against_cpu.then(|| Inputs::load(&Cpu, c).expect("the CPU backend loads every case"));
        for e in entries_for(c) {
            let got = match run_method(b, e.method, c, &inputs) {
                Ok(o) => o,
                Err(err) => {
                    r.failures.push(format!("[{label}] {} {}: error {err}", c.name, e.method));
                    continue;
                }
            };
            let cpu = cpu_inputs.as_ref().map(|ci| run_method(&Cpu, e.method, c, ci).expect("the CPU backend runs every case"));
            for (i, (k, t)) in got.iter().enumerate() {
                r.computed.push((c.name.clone(), k.clone()));
                let g = match b.to_host(t) {
                    Ok(g) => g,
                    Err(err) => {
                        r.failures.push(format!("[{label}] {} {}.{k}: to_host: {err}", c.name, e.method));
                        continue;
                    }
                };
                let mut refs: Vec<(&str, Vec<usize>, Vec<f32>)> = Vec::new();
                if let Some((s, v)) = c.reference(k) {
                    refs.push(("reference", s.clone(), v.clone()));
                }
                if let Some(cpu) = &cpu {
                    let ct = &cpu[i].1;
                    refs.push(("cpu", ct.dims().to_vec(), Cpu.to_host(ct).unwrap()));
                }
                if refs.is_empty() {
                    r.failures.push(format!("[{label}] {} {}.{k}: nothing to compare with", c.name, e.method));
                }
                for (what, dims, want) in refs {
                    let what_at = format!("[{label}] {} {}.{k} vs {what}", c.name, e.method);
                    if t.dims() != dims.as_slice() {
                        r.failures.push(format!("{what_at}: shape {:?}, reference {dims:?}", t.dims()));
                        continue;
                    }
                    let tol = e.tolerance(c, k, &want);
                    let tol = Tol { atol: tol.atol * atol_scale, ..tol };
                    match compare(&g, &want, tol) {
                        Ok(cmp) => {
                            r.comparisons += 1;
                            let row = r.rows.entry(e.method).or_insert((0, 0.0, 0.0, tol));
                            row.0 += 1;
                            row.1 = row.1.max(cmp.max_err);
                            if cmp.used >= row.2 {
                                (row.2, row.3) = (cmp.used, tol);
                            }
                            if !cmp.passes() {
                                let i = cmp.worst;
                                r.failures.push(format!("{what_at}: element {i} got {} want {} (atol {:e}, rtol {:e}; max abs err {:e})", g[i], want[i], tol.atol, tol.rtol, cmp.max_err));
                            }
                        }
                        Err(m) => r.failures.push(format!("{what_at}: {m}")),
                    }
                }
            }
        }
    }
    r
}
