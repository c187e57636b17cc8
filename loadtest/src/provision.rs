//! Device provisioning through the admin API (`POST /api/devices`).

use fleetgate::client::Client;

/// Parallel API clients: creation is one synchronous round trip each, so a few overlap the
/// server's write latency without flooding it.
const THREADS: usize = 4;

/// Creates `n` devices and returns their `(device_id, token)` pairs.
pub fn create(
    url: &str,
    admin_token: &str,
    n: usize,
) -> Result<Vec<(String, String)>, Box<dyn std::error::Error>> {
    let client = Client::new(url)?.with_token(admin_token);
    let run = std::process::id();
    let per = n.div_ceil(THREADS);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || -> Result<Vec<(String, String)>, String> {
                let mut out = Vec::new();
                for i in (t * per)..((t + 1) * per).min(n) {
                    let body = format!(r#"{{"name":"lt-{run}-{i}"}}"#);
                    let r = client
                        .post_json("/api/devices", body.as_bytes())
                        .map_err(|e| format!("POST /api/devices: {e}"))?;
                    if !(200..300).contains(&r.status) {
                        return Err(format!(
                            "POST /api/devices answered {}: {}",
                            r.status,
                            r.text()
                        ));
                    }
                    let v: serde_json::Value = serde_json::from_slice(&r.body)
                        .map_err(|e| format!("POST /api/devices: invalid JSON: {e}"))?;
                    let field = |k: &str| {
                        v.get(k)
                            .and_then(|x| x.as_str())
                            .map(str::to_owned)
                            .ok_or_else(|| format!("POST /api/devices: no {k} in {v}"))
                    };
                    out.push((field("device_id")?, field("token")?));
                }
                Ok(out)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for h in handles {
        all.extend(h.join().map_err(|_| "provisioning thread panicked")??);
    }
    Ok(all)
}
