//! The benchmark's variant: `--runtime NAME` (e.g. gVisor's `runsc`) and/or `--storage-mode
//! copy` start a second pair of servers (with and without the pool) with those settings; they
//! are measured in the same interleaved rounds as the default pair, and a table puts each
//! variant median next to the default one.

use anyhow::bail;

use crate::report::Rows;
use crate::support::Series;

/// Settings the variant servers get, and how the table names them.
pub struct Variant {
    pub label: String,
    pub env: Vec<(String, String)>,
}

/// The variant asked for on the command line, if any.
pub fn from_args() -> anyhow::Result<Option<Variant>> {
    let mut env = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let key = match arg.as_str() {
            "--runtime" => "RUNTIME",
            "--storage-mode" => "STORAGE_MODE",
            other => bail!(
                "unknown argument {other:?} (known: --runtime NAME, --storage-mode bind|copy)"
            ),
        };
        let Some(value) = args.next() else {
            bail!("{arg} needs a value");
        };
        env.push((key.to_string(), value));
    }
    if env.is_empty() {
        return Ok(None);
    }
    let label = env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    Ok(Some(Variant { label, env }))
}

/// What the variant servers measured.
#[derive(Default)]
pub struct VariantRows {
    pub warm: Series,
    pub cold: Series,
    pub wdata: Series,
    pub cdata: Series,
    pub wserver: Series,
}

pub fn print(v: &Variant, base: &Rows, r: &VariantRows) {
    println!(
        "\nVariant {} (same rounds; its pool server is POOL_SIZE=2, which copy mode turns off):\n",
        v.label
    );
    println!("| what | default median ms | variant median ms | variant / default |");
    println!("|---|---|---|---|");
    let row = |name: &str, d: &Series, x: &Series| {
        println!(
            "| {name} | {:.1} | {:.1} | {:.2}× |",
            d.median(),
            x.median(),
            x.median() / d.median()
        )
    };
    row(
        "execute_code `print(1+1)`, pool server",
        &base.warm,
        &r.warm,
    );
    row(
        "execute_code `print(1+1)`, cold (POOL_SIZE=0)",
        &base.cold,
        &r.cold,
    );
    row(
        "execute_code numpy+pandas, pool server",
        &base.wdata,
        &r.wdata,
    );
    row("execute_code numpy+pandas, cold", &base.cdata, &r.cdata);
    row(
        "pool server: server-side run time",
        &base.wserver,
        &r.wserver,
    );
}
