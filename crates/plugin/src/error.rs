/// An error from a plugin, prefixed with the plugin's name when shown.
#[derive(Debug, thiserror::Error)]
#[error("{plugin}: {source}")]
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
