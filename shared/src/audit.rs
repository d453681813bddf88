//! Checking the books of one account: every credit granted is either still in the
//! balance, spent on an answered chat, or held by a charge that is still open.
//!
//! `granted = balance + settled + open`. Refunded chats cost nothing and appear only as
//! a count. The check reads the user item and then the chats, so run it on an account
//! with no chat in flight (or run it again).

use std::fmt;

use crate::store::{self, ChargeState, Store};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Books {
    pub granted: u64,
    pub balance: u64,
    /// Credits spent on completed chats, and how many there are.
    pub settled: u64,
    pub completed_chats: usize,
    pub refunded_chats: usize,
    /// Credits held by charges not yet settled or refunded, and how many there are.
    pub open: u64,
    pub open_charges: usize,
}

impl Books {
    /// Credits unaccounted for: 0 when the books balance. Positive means lost credits,
    /// negative means credits spent twice or created from nothing.
    pub fn discrepancy(&self) -> i128 {
        i128::from(self.granted)
            - i128::from(self.balance)
            - i128::from(self.settled)
            - i128::from(self.open)
    }

    pub fn is_balanced(&self) -> bool {
        self.discrepancy() == 0
    }
}

impl fmt::Display for Books {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "granted          {:>10}", self.granted)?;
        writeln!(f, "balance          {:>10}", self.balance)?;
        writeln!(
            f,
            "settled          {:>10}  ({} completed chats)",
            self.settled, self.completed_chats
        )?;
        writeln!(
            f,
            "open charges     {:>10}  ({} open)",
            self.open, self.open_charges
        )?;
        writeln!(f, "refunded chats   {:>10}", self.refunded_chats)?;
        match self.discrepancy() {
            0 => write!(f, "balanced: granted = balance + settled + open"),
            d => write!(f, "NOT BALANCED: {d} credits unaccounted for"),
        }
    }
}

/// The books of `user_key`, or `None` if there is no such account.
pub async fn audit(store: &Store, user_key: &str) -> Result<Option<Books>, store::Error> {
    let Some(ledger) = store.ledger(user_key).await? else {
        return Ok(None);
    };
    let chats = store.chats(user_key).await?;
    let completed = chats.iter().filter(|c| c.state == ChargeState::Completed);
    Ok(Some(Books {
        granted: ledger.granted,
        balance: ledger.balance,
        settled: completed.clone().map(|c| c.cost).sum(),
        completed_chats: completed.count(),
        refunded_chats: chats
            .iter()
            .filter(|c| c.state == ChargeState::Refunded)
            .count(),
        open: ledger.open.iter().map(|c| c.cost).sum(),
        open_charges: ledger.open.len(),
    }))
}
