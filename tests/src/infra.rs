//! The project's infrastructure as tests drive it: its scripts, found at
//! run time (the checkout the test runs in, not the one it was compiled
//! in), Kafka clusters of a test's own, and Kafka's own tools.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The checkout's root: `MEND_ROOT`, else the first directory from the
/// working directory up (cargo runs tests in their package's directory)
/// that holds `infra/up.sh`.
pub fn root() -> anyhow::Result<PathBuf> {
    if let Ok(root) = std::env::var("MEND_ROOT") {
        return Ok(PathBuf::from(root));
    }
    let here = std::env::current_dir()?;
    here.ancestors()
        .find(|dir| dir.join("infra/up.sh").is_file())
        .map(Path::to_path_buf)
        .with_context(|| format!("no infra/up.sh above {} (set MEND_ROOT)", here.display()))
}

/// Runs `infra/<script> args…` and fails with its output when it fails.
pub async fn script(script: &str, args: &[&str]) -> anyhow::Result<String> {
    let root = root()?;
    let output = tokio::process::Command::new("bash")
        .arg(root.join("infra").join(script))
        .args(args)
        .env("MEND_SKIP_BUILD", "1")
        .current_dir(&root)
        .output()
        .await?;
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    anyhow::ensure!(output.status.success(), "infra/{script} {args:?}: {}: {said}", output.status);
    Ok(said)
}

/// The process id PostgreSQL's data directory names (its postmaster).
pub fn postgres_pid() -> anyhow::Result<u32> {
    let state = root()?.join(".mend/postgres");
    let dir = std::fs::read_link(&state).unwrap_or(state);
    let text = std::fs::read_to_string(dir.join("data/postmaster.pid"))?;
    Ok(text.lines().next().unwrap_or_default().trim().parse()?)
}

/// Where Kafka's jars are (`infra/kafka.sh` installs them).
pub fn kafka_home() -> PathBuf {
    let tools = std::env::var("MEND_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/mend"));
    tools.join("kafka-4.4.0")
}

/// Runs one of Kafka's own tools (`org.apache.kafka.tools.…` or
/// `kafka.tools.…`) with `java -cp`, and returns its standard output.
pub async fn kafka_tool(class: &str, args: &[&str]) -> anyhow::Result<String> {
    let classpath = format!("{}/libs/*", kafka_home().display());
    let output = tokio::process::Command::new("java")
        .args(["-Xmx256m", "-cp", &classpath, class])
        .args(args)
        .output()
        .await
        .context("running java (infra/kafka.sh installs it)")?;
    anyhow::ensure!(
        output.status.success(),
        "{class} {args:?}: {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A KRaft cluster of the test's own on loopback (each node broker and
/// controller), stopped when dropped.
pub struct Cluster {
    pub dir: PathBuf,
    pub base: u16,
    pub nodes: u16,
}

impl Cluster {
    /// Formats and starts `nodes` nodes from port `base`, in a new directory.
    pub async fn start(base: u16, nodes: u16) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(crate::unique("mend-cluster"));
        std::fs::create_dir_all(&dir)?;
        let cluster = Self { dir, base, nodes };
        cluster.kafka(&["up", &cluster.base.to_string(), &cluster.nodes.to_string()]).await?;
        Ok(cluster)
    }

    /// Every node's listener, as bootstrap servers.
    pub fn brokers(&self) -> String {
        (1..=self.nodes).map(|i| format!("127.0.0.1:{}", self.port(i))).collect::<Vec<_>>().join(",")
    }

    pub fn port(&self, node: u16) -> u16 {
        self.base + 2 * (node - 1)
    }

    async fn kafka(&self, args: &[&str]) -> anyhow::Result<String> {
        let dir = self.dir.to_string_lossy().into_owned();
        let mut all = vec![args[0], dir.as_str()];
        all.extend_from_slice(&args[1..]);
        script("kafka.sh", &all).await
    }

    /// Node `node`'s process id, from its pid file.
    pub fn pid(&self, node: u16) -> anyhow::Result<u32> {
        Ok(std::fs::read_to_string(self.dir.join(format!("node-{node}.pid")))?.trim().parse()?)
    }

    /// How many times node `node`'s log says it started.
    pub fn starts(&self, node: u16) -> anyhow::Result<usize> {
        let log = std::fs::read_to_string(self.dir.join(format!("node-{node}.log"))).unwrap_or_default();
        Ok(log.lines().filter(|line| line.contains("Kafka Server started")).count())
    }

    /// SIGKILLs node `node` and waits until it is gone.
    pub async fn kill(&self, node: u16) -> anyhow::Result<()> {
        let pid = self.pid(node)?;
        self.kafka(&["kill", &node.to_string()]).await?;
        let gone = std::path::Path::new("/proc").join(pid.to_string());
        crate::eventually(&format!("node {node} (pid {pid}) to exit"), || {
            let gone = gone.clone();
            async move { Ok((!gone.exists()).then_some(())) }
        })
        .await
    }

    /// Starts node `node` again and proves it: a new process id, and its
    /// own log saying it started once more.
    pub async fn restart(&self, node: u16) -> anyhow::Result<()> {
        let (before, starts) = (self.pid(node).ok(), self.starts(node)?);
        self.kafka(&["start", &self.base.to_string(), &self.nodes.to_string(), &node.to_string()]).await?;
        let after = self.pid(node)?;
        anyhow::ensure!(Some(after) != before, "node {node} kept its process id {after}: it was not restarted");
        // A node starts once the quorum has it unfenced: under load, longer
        // than a test's usual wait. Kafka exits when the quorum does not
        // answer during its start ("fatal error while waiting for the
        // controller"); it is started again then, as a service manager would.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(180);
        let args = [self.base.to_string(), self.nodes.to_string(), node.to_string()];
        while self.starts(node)? <= starts {
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "node {node} never logged its start");
            let pid = self.pid(node)?;
            if !std::path::Path::new("/proc").join(pid.to_string()).exists() {
                eprintln!("node {node} (pid {pid}) exited while starting; starting it again");
                self.kafka(&["start", &args[0], &args[1], &args[2]]).await?;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// The node leading the KRaft quorum (the active controller), as
    /// Kafka's `kafka-metadata-quorum describe --status` reports it.
    pub async fn active_controller(&self) -> anyhow::Result<u16> {
        let status = kafka_tool(
            "org.apache.kafka.tools.MetadataQuorumCommand",
            &["--bootstrap-server", &self.brokers(), "describe", "--status"],
        )
        .await?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("LeaderId:").map(|id| id.trim().parse::<u16>()))
            .context(format!("no LeaderId in: {status}"))?
            .map_err(Into::into)
    }

    /// The registry of mend's own on this cluster, on `port`.
    pub fn registry(&self, port: u16, log: &Path) -> anyhow::Result<tokio::process::Child> {
        let binary = crate::mend_bin()?.with_file_name("mend-registry");
        Ok(tokio::process::Command::new(binary)
            .env("MEND_KAFKA_BROKERS", self.brokers())
            .env("MEND_REGISTRY_ADDR", format!("127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log)?)
            .kill_on_drop(true)
            .spawn()?)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let Ok(root) = root() else { return };
        let _ = std::process::Command::new("bash")
            .arg(root.join("infra/kafka.sh"))
            .args(["down", &self.dir.to_string_lossy()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        // Leave its logs for a failing test to read; its data can go.
        for node in 1..=self.nodes {
            let _ = std::fs::remove_dir_all(self.dir.join(format!("node-{node}/data")));
        }
    }
}
