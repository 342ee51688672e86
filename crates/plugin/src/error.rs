/// An error from a plugin. Its message is the plugin's name and its source is the plugin's own
/// error, so a report that prints the chain (`error: {:#}`) reads `ventoy: <what went wrong>`
/// without repeating the cause.
#[derive(Debug, thiserror::Error)]
#[error("{plugin}")]
pub struct PluginError {
    /// The plugin's name (`ventoy`, `initrd`, `qemu`, …).
    pub plugin: &'static str,
    /// What went wrong, in the plugin's own error type.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl PluginError {
    /// Wraps a plugin's own error.
    pub fn new(
        plugin: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self {
            plugin,
            source: source.into(),
        }
    }
}

/// An error and its sources in one line, `initrd: --kernel: …`, as keypack prints its own: for
/// a plugin program's `error` message.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::PluginError;

    /// The chain reads `plugin: cause` once; the cause is not repeated in the message.
    #[test]
    fn chain_names_the_plugin_then_the_cause_once() {
        let err = PluginError::new("ventoy", "boot.img is missing");
        let mut chain = vec![err.to_string()];
        let mut source = err.source();
        while let Some(s) = source {
            chain.push(s.to_string());
            source = s.source();
        }
        assert_eq!(chain.join(": "), "ventoy: boot.img is missing");
    }
}
