//! The migration modes of seed 003, chosen by `CONFIG_MIGRATION_MODE`
//! (contract: default `legacy_only` without `CONFIG_SERVICE_URL`, `new_only` with it).

/// The variable that chooses the mode.
pub const MIGRATION_MODE_ENV: &str = "CONFIG_MIGRATION_MODE";

/// Which source the settings come from, and what the other one is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationMode {
    /// The environment only (today's variables and the contract's keys).
    LegacyOnly,
    /// The config service only; the engine does not start without it.
    NewOnly,
    /// The config service; per key the environment when the service fails
    /// (`config_fallback_total{key}`).
    NewWithFallback,
    /// The environment; every value compared with the config service's
    /// (`config_discrepancy_total{key}`).
    LegacyWithValidation,
}

impl MigrationMode {
    pub const ALL: [Self; 4] = [
        Self::LegacyOnly,
        Self::NewOnly,
        Self::NewWithFallback,
        Self::LegacyWithValidation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::LegacyOnly => "legacy_only",
            Self::NewOnly => "new_only",
            Self::NewWithFallback => "new_with_fallback",
            Self::LegacyWithValidation => "legacy_with_validation",
        }
    }

    /// The mode `CONFIG_MIGRATION_MODE` names, or the contract's default for
    /// whether a config service URL is set.
    pub fn choose(named: Option<&str>, service_url_set: bool) -> Result<Self, String> {
        match named.map(str::trim) {
            None | Some("") => Ok(if service_url_set {
                Self::NewOnly
            } else {
                Self::LegacyOnly
            }),
            Some(text) => Self::ALL
                .into_iter()
                .find(|mode| mode.as_str() == text)
                .ok_or_else(|| "legacy_only, new_only, new_with_fallback or legacy_with_validation".to_owned()),
        }
    }

    /// Whether the settings are read from the config service (else from the environment).
    pub fn reads_service(self) -> bool {
        matches!(self, Self::NewOnly | Self::NewWithFallback)
    }
}

impl std::fmt::Display for MigrationMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_follows_the_service_url_and_names_parse() {
        // Proves the contract's defaults and that every mode's name round-trips.
        assert_eq!(MigrationMode::choose(None, false), Ok(MigrationMode::LegacyOnly));
        assert_eq!(MigrationMode::choose(None, true), Ok(MigrationMode::NewOnly));
        for mode in MigrationMode::ALL {
            assert_eq!(MigrationMode::choose(Some(mode.as_str()), true), Ok(mode));
        }
        assert!(MigrationMode::choose(Some("newonly"), true).is_err());
    }
}
