//! What happens to one message, whichever way it came in (JSON API or HTML form):
//! validate, answer from the cache (canary feature) or the model, count it.

use std::sync::Arc;

use sms_proto::{TextError, validate_text};
use sms_runtime::trace::SpanContext;

use crate::{
    cache::PredictionCache,
    metrics::Metrics,
    model_client::{Classification, ModelCallError, ModelClient},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guess {
    Spam,
    Ham,
}

impl Guess {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "spam" => Some(Self::Spam),
            "ham" => Some(Self::Ham),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Spam => "spam",
            Self::Ham => "ham",
        }
    }
}

pub struct Outcome {
    pub classification: Classification,
    pub guess: Option<Guess>,
    /// Whether the classifier agrees with the user's guess (None without a guess).
    pub agrees: Option<bool>,
    pub cached: bool,
}

#[derive(Debug)]
pub enum ClassifyError {
    Invalid(TextError),
    Model(ModelCallError),
}

pub struct Classifier {
    pub model: ModelClient,
    pub cache: Option<PredictionCache>,
    pub metrics: Arc<Metrics>,
}

impl Classifier {
    pub async fn classify(
        &self,
        sms: &str,
        guess: Option<Guess>,
        trace: &SpanContext,
    ) -> Result<Outcome, ClassifyError> {
        let text = validate_text(sms).map_err(ClassifyError::Invalid)?;
        let cached = self.cache.as_ref().and_then(|cache| {
            let hit = cache.get(&text);
            self.metrics.cache_lookup(hit.is_some());
            hit
        });
        let (classification, from_cache) = match cached {
            Some(c) => (c, true),
            None => {
                let answer = self.model.classify(text.clone(), guess.map(Guess::as_str), trace).await;
                let outcome = answer.as_ref().map_or_else(ModelCallError::outcome, |_| "ok");
                self.metrics.model_call(outcome);
                let c = answer.map_err(ClassifyError::Model)?;
                if let Some(cache) = &self.cache {
                    cache.insert(text, c.clone());
                }
                (c, false)
            }
        };
        self.metrics.classified(&classification.label);
        let agrees = guess.map(|g| g.as_str() == classification.label);
        if let Some(agrees) = agrees {
            self.metrics.guess(agrees);
        }
        Ok(Outcome { classification, guess, agrees, cached: from_cache })
    }
}
