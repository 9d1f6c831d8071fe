use crate::build::BuildError;

/// Why one reconciliation failed; the controller retries with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cluster metadata: {0}")]
    Build(#[from] BuildError),
    #[error("{action} {kind} {name}: {source}")]
    Kube {
        action: &'static str,
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    pub fn kube(
        action: &'static str,
        kind: &'static str,
        name: &str,
    ) -> impl FnOnce(kube::Error) -> Self {
        let name = name.to_string();
        move |source| Error::Kube {
            action,
            kind,
            name,
            source,
        }
    }

    /// Low-cardinality label for the failure metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Build(_) => "metadata",
            Error::Kube { .. } => "kube",
            Error::Finalizer(_) => "finalizer",
        }
    }
}
