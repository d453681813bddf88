//! Checking the books of one account, two ways:
//!
//! 1. The counters: every credit granted is still in the balance, spent on answered
//!    chats, or held by a charge that is still open: `granted = balance + spent + open`.
//! 2. The counters against the chats: the credits spent equal the cost of the answered
//!    chats whose charges are closed. More answered than spent means answers went out
//!    free; less means credits were kept without an answer on record.
//!
//! Refunded chats cost nothing and appear only as a count. The check reads the user item
//! and then the chats, so run it on an account with no chat in flight (or run it again).

use std::fmt;

use crate::store::{self, ChargeState, Store};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Books {
    pub granted: u64,
    pub balance: u64,
    /// Credits of closed, answered charges (the user item's counter).
    pub settled: u64,
    /// What the answered chats on record cost, their charges closed or not.
    pub answered: u64,
    /// Of that, what answered chats whose charges are still open hold.
    pub answered_open: u64,
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

    /// Answered chats not paid for (positive) or credits kept without an answer on
    /// record (negative): 0 when every answer was paid for exactly once.
    pub fn unpaid_answers(&self) -> i128 {
        i128::from(self.answered) - i128::from(self.answered_open) - i128::from(self.settled)
    }

    pub fn is_balanced(&self) -> bool {
        self.discrepancy() == 0 && self.unpaid_answers() == 0
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
        writeln!(
            f,
            "answered         {:>10}  ({} of it still open)",
            self.answered, self.answered_open
        )?;
        match (self.discrepancy(), self.unpaid_answers()) {
            (0, 0) => write!(
                f,
                "balanced: granted = balance + settled + open, and settled = answered and closed"
            ),
            (0, u) if u > 0 => write!(f, "NOT BALANCED: {u} credits of answers never paid for"),
            (0, u) => write!(
                f,
                "NOT BALANCED: {} credits kept without an answer on record",
                -u
            ),
            (d, _) => write!(f, "NOT BALANCED: {d} credits unaccounted for"),
        }
    }
}

/// The books of `user_key`, or `None` if there is no such account.
pub async fn audit(store: &Store, user_key: &str) -> Result<Option<Books>, store::Error> {
    let Some(user) = store.user(user_key).await? else {
        return Ok(None);
    };
    let ledger = store::Ledger {
        granted: user.granted,
        balance: user.balance,
        spent: user.spent,
        open: user.open,
    };
    let chats = store.chats_of(&user.account).await?;
    Ok(Some(books(&ledger, &chats)))
}

/// The books of a deleted account, from its tombstone and its anonymised charge records:
/// what it was granted, spent and left unspent when it was deleted. `None` if there is no
/// such tombstone.
pub async fn audit_deleted(store: &Store, id: &str) -> Result<Option<Books>, store::Error> {
    let Some(tomb) = store.tombstone(id).await? else {
        return Ok(None);
    };
    let ledger = store::Ledger {
        granted: tomb.granted,
        balance: tomb.balance,
        spent: tomb.spent,
        open: Vec::new(),
    };
    let chats = store.deleted_chats(id).await?;
    Ok(Some(books(&ledger, &chats)))
}

fn books(ledger: &store::Ledger, chats: &[store::ChatRecord]) -> Books {
    let completed = chats.iter().filter(|c| c.state == ChargeState::Completed);
    let open = |id: &str| ledger.open.iter().any(|c| c.id == id);
    Books {
        granted: ledger.granted,
        balance: ledger.balance,
        settled: ledger.spent,
        answered: completed.clone().map(|c| c.cost).sum(),
        answered_open: completed
            .clone()
            .filter(|c| open(&c.id))
            .map(|c| c.cost)
            .sum(),
        completed_chats: completed.count(),
        refunded_chats: chats
            .iter()
            .filter(|c| c.state == ChargeState::Refunded)
            .count(),
        open: ledger.open.iter().map(|c| c.cost).sum(),
        open_charges: ledger.open.len(),
    }
}
