//! The one way an alias moves. "An alias, its history and its rollout agree" is kept here and
//! nowhere else: [`Locked::move_alias`] checks the version (its file against its manifest, its
//! signer against the model's policy), writes the alias, appends its history line and ends (or
//! promotes) the alias's rollout; publish, rollback, set-alias, a rollout's
//! promotion and bake all call it. [`Locked::settle_rollout`] repairs what a crash between those
//! writes left behind.

use crate::rollout::transition::{Did, Input, Transition, transition};
use crate::rollout::{Actor, Conflict, Evaluation, Rollout};
use crate::{AliasAction, AliasRecord, HistoryEntry, Locked, RegistryError, to_json};
use modelpipe_core::model_name::{AliasName, ModelName};
use modelpipe_core::time::Timestamp;

/// A move of one alias of the locked model.
#[derive(Debug, Clone)]
pub struct AliasMove<'a> {
    pub alias: &'a AliasName,
    pub version: u64,
    pub action: AliasAction,
    /// The history line's reason.
    pub reason: String,
    pub request_id: Option<&'a str>,
}

/// A rollout's promotion: the record [`transition`] wrote for it, who decided, on what numbers.
#[derive(Debug, Clone)]
pub struct Promotion {
    pub transition: Transition,
    pub by: Actor,
    pub evidence: Option<Evaluation>,
}

/// What a move did.
#[derive(Debug, Clone, PartialEq)]
pub struct Moved {
    pub version: u64,
    /// Where the alias pointed before (the same version when the move changed nothing).
    pub previous: Option<u64>,
    /// The alias's rollout after the move, if it has one.
    pub rollout: Option<Rollout>,
}

#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// The version does not satisfy the model's signer policy.
    #[error("cannot point {model}:{alias} at v{version}: {why}")]
    Refused {
        model: ModelName,
        alias: AliasName,
        version: u64,
        why: String,
    },
    #[error(transparent)]
    Conflict(#[from] Conflict),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl Locked<'_> {
    /// Points the alias at the version after checking the version's file against its manifest,
    /// appends the history line, then ends the alias's rollout if the move left it behind
    /// (`promotion`: as that promotion decided). Moving an alias to where it already points
    /// writes nothing but that repair.
    pub fn move_alias(
        &self,
        mv: AliasMove<'_>,
        promotion: Option<Promotion>,
    ) -> Result<Moved, MoveError> {
        let registry = self.registry();
        let (model, alias) = (self.model(), mv.alias);
        let manifest = registry.verified_manifest(model, mv.version)?;
        let current = registry.alias(model, alias)?;
        self.restore_history(alias, current.as_ref())?;
        let previous = current.as_ref().map(|c| c.version);
        if previous != Some(mv.version) {
            self.admit(alias, &manifest)?;
            let at = Timestamp::now();
            let record = AliasRecord {
                version: mv.version,
                sha256: manifest.sha256,
                updated_at: at,
                previous,
                reason: mv.reason.clone(),
            };
            // Alias first, history second: a crash in between is repaired by `restore_history`.
            self.write_alias(alias, &record)?;
            self.append_history(&HistoryEntry {
                alias: alias.clone(),
                from: previous,
                to: mv.version,
                action: mv.action,
                reason: mv.reason,
                at,
                request_id: mv.request_id.map(str::to_string),
            })?;
        }
        // Alias before rollout: a crash in between is repaired by `settle_rollout`.
        let rollout = match promotion {
            Some(Promotion {
                transition,
                by,
                evidence,
            }) => {
                let expected = transition.next.generation;
                Some(self.swap_rollout(
                    Some(expected),
                    transition.next,
                    Did::Promoted,
                    by,
                    evidence,
                    mv.request_id,
                )??)
            }
            None => self.settle_rollout(alias)?,
        };
        Ok(Moved {
            version: mv.version,
            previous,
            rollout,
        })
    }

    /// The alias's rollout, ended first if the alias was moved under it (see
    /// [`Input::AliasAt`]).
    pub fn settle_rollout(&self, alias: &AliasName) -> Result<Option<Rollout>, MoveError> {
        let registry = self.registry();
        let Some(rollout) = registry.rollout(self.model(), alias)? else {
            return Ok(None);
        };
        let at = registry.alias(self.model(), alias)?.map(|a| a.version);
        let settled = transition(
            &rollout,
            rollout.generation,
            Input::AliasAt(at),
            Timestamp::now(),
        )
        .expect("read at its own generation");
        if !settled.did.writes() {
            return Ok(Some(rollout));
        }
        let expected = rollout.generation;
        Ok(Some(self.swap_rollout(
            Some(expected),
            settled.next,
            settled.did,
            Actor::Registry,
            None,
            None,
        )??))
    }

    /// If a crash lost the history line of the alias's last move, restores it from the alias
    /// file.
    pub(crate) fn restore_history(
        &self,
        alias: &AliasName,
        current: Option<&AliasRecord>,
    ) -> Result<(), RegistryError> {
        let Some(current) = current else {
            return Ok(());
        };
        let history = self.registry().history(self.model())?;
        let last = history
            .iter()
            .rev()
            .find(|e| &e.alias == alias)
            .map(|e| e.to);
        if last != Some(current.version) {
            self.append_history(&HistoryEntry {
                alias: alias.clone(),
                from: current.previous,
                to: current.version,
                action: AliasAction::Recovered,
                reason: format!("restored from aliases/{alias}.json: {}", current.reason),
                at: current.updated_at,
                request_id: None,
            })?;
        }
        Ok(())
    }

    pub(crate) fn append_history(&self, entry: &HistoryEntry) -> Result<(), RegistryError> {
        self.append(
            &format!("{}/history.jsonl", self.model()),
            &crate::to_line(entry),
        )
    }

    fn write_alias(&self, alias: &AliasName, record: &AliasRecord) -> Result<(), RegistryError> {
        self.write(&crate::alias_key(self.model(), alias), &to_json(record))
    }
}
