//! Helpers of the benchmark: timing series, timed commands, a process's memory, and the check
//! that no container of ours is left on the daemon.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::Value;
use tokio::process::Command;

/// Times in milliseconds.
#[derive(Default)]
pub struct Series(Vec<f64>);

impl Series {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1000.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn pct(&self, p: f64) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return f64::NAN;
        }
        let idx = ((v.len() - 1) as f64 * p).round() as usize;
        v[idx]
    }

    pub fn median(&self) -> f64 {
        self.pct(0.5)
    }
}

pub async fn time_command(program: &str, args: &[&str]) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let out = Command::new(program).args(args).output().await?;
    let took = t0.elapsed();
    if !out.status.success() {
        bail!("{program} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(took)
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Managed containers that bind-mount something under one of `dirs` (the runs of our servers
/// mount their storage folders), or share an instance label with one that does.
pub fn containers_under(dirs: &[&Path]) -> Vec<String> {
    let dirs: Vec<_> = dirs
        .iter()
        .map(|d| d.canonicalize().unwrap_or_else(|_| d.to_path_buf()))
        .collect();
    let Ok(ps) = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=mcp-code-executor.managed"])
        .output()
    else {
        return Vec::new();
    };
    let ids: Vec<String> = String::from_utf8_lossy(&ps.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if ids.is_empty() {
        return Vec::new();
    }
    // A container removed between the two commands only makes inspect fail for it.
    let Ok(out) = std::process::Command::new("docker")
        .arg("inspect")
        .args(&ids)
        .output()
    else {
        return Vec::new();
    };
    let all: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let instance = |c: &Value| {
        c["Config"]["Labels"]["mcp-code-executor.instance"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let mounts_ours = |c: &Value| {
        c["Mounts"].as_array().is_some_and(|ms| {
            ms.iter()
                .filter_map(|m| m["Source"].as_str())
                .any(|s| dirs.iter().any(|d| Path::new(s).starts_with(d)))
        })
    };
    // Containers of an instance that mounts our folders are ours too (sentinels mount nothing).
    let instances: Vec<String> = all
        .iter()
        .filter(|c| mounts_ours(c))
        .map(instance)
        .filter(|i| !i.is_empty())
        .collect();
    all.iter()
        .filter(|c| mounts_ours(c) || instances.contains(&instance(c)))
        .map(|c| {
            c["Name"]
                .as_str()
                .unwrap_or("")
                .trim_start_matches('/')
                .to_string()
        })
        .collect()
}

/// Waits (up to 20 s) until no container of ours is left; returns those still there.
pub async fn leftovers(dirs: &[&Path]) -> Vec<String> {
    let t0 = Instant::now();
    loop {
        let left = containers_under(dirs);
        if left.is_empty() || t0.elapsed() > Duration::from_secs(20) {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
