//! One step of the simulated random walk: price in, price out, randomness passed in.
//!
//! Pure and exact: `Decimal` only, never a float, and no hidden state; the
//! same random source always gives the same prices.

use rand::Rng;
use rust_decimal::{Decimal, RoundingStrategy};

/// Basis points in one whole (100%).
pub const BPS_PER_UNIT: u32 = 10_000;

/// The largest move a step may make: 100%, which can take a price to the floor.
/// Larger bounds are clamped to it so the factor below never goes negative.
pub const MAX_STEP_BPS_MAX: u32 = BPS_PER_UNIT;

/// Decimal places of a walked price: cents.
pub const PRICE_SCALE: u32 = 2;

/// The walk never goes below one cent: a price of zero cannot be traded.
pub const MIN_PRICE: Decimal = Decimal::from_parts(1, 0, 0, false, PRICE_SCALE);

/// The walk never goes above the largest cent amount `DECIMAL(18, 8)` holds
/// (values must stay below 10^10), so every walked price can be stored.
pub const MAX_PRICE: Decimal = Decimal::from_parts(3_567_587_327, 232, 0, false, PRICE_SCALE);

/// Draws a move in `[-max_step_bps, +max_step_bps]` basis points and applies it.
pub fn walk_step<R: Rng + ?Sized>(price: Decimal, max_step_bps: u32, rng: &mut R) -> Decimal {
    let bound = bps_bound(max_step_bps);
    let bps = rng.gen_range(-bound..=bound);
    apply_move(price, bps)
}

/// Moves `price` by `bps` basis points (clamped to ±[`MAX_STEP_BPS_MAX`]), on the cent grid.
///
/// The result is rounded towards the unmoved price (down when moving up, up
/// when moving down), so a price on the cent grid never moves further than
/// `bps` allows; then it is held between [`MIN_PRICE`] and [`MAX_PRICE`]. A price off
/// the cent grid (one set by hand) snaps onto it, moving less than a cent more.
pub fn apply_move(price: Decimal, bps: i32) -> Decimal {
    let bound = bps_bound(MAX_STEP_BPS_MAX);
    let bps = bps.clamp(-bound, bound);
    // (10_000 + bps) / 10_000 is exact in Decimal: at most four decimal places.
    let factor = Decimal::from(bound + bps) / Decimal::from(bound);
    // Overflow needs a price near 10^28, far beyond any listed one; cap it rather than panic.
    let target = price.checked_mul(factor).unwrap_or(MAX_PRICE);
    let towards_unmoved = if bps >= 0 {
        RoundingStrategy::ToNegativeInfinity
    } else {
        RoundingStrategy::ToPositiveInfinity
    };
    target
        .round_dp_with_strategy(PRICE_SCALE, towards_unmoved)
        .clamp(MIN_PRICE, MAX_PRICE)
}

fn bps_bound(max_step_bps: u32) -> i32 {
    // MAX_STEP_BPS_MAX is 10_000, so the clamped value always fits an i32.
    i32::try_from(max_step_bps.min(MAX_STEP_BPS_MAX)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use rust_decimal_macros::dec;

    use super::*;
    use crate::order::check_positive_amount;

    const CASES: u32 = 1_000;
    const WALK_LEN: usize = 200;

    fn walk(seed: u64, start: Decimal, max_step_bps: u32) -> Vec<Decimal> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut price = start;
        (0..WALK_LEN)
            .map(|_| {
                price = walk_step(price, max_step_bps, &mut rng);
                price
            })
            .collect()
    }

    /// The largest move `bps` allows from `price`, exact.
    fn allowed(price: Decimal, max_step_bps: u32) -> Decimal {
        price * Decimal::from(max_step_bps.min(MAX_STEP_BPS_MAX)) / Decimal::from(BPS_PER_UNIT)
    }

    #[test]
    fn the_bounds_are_the_ones_named() {
        // Proves the hand-built constants mean one cent and the largest storable cent amount.
        assert_eq!(MIN_PRICE, dec!(0.01));
        assert_eq!(MAX_PRICE, dec!(9999999999.99));
        assert_eq!(check_positive_amount(MAX_PRICE), Ok(()));
        assert!(check_positive_amount(MAX_PRICE + MIN_PRICE).is_err());
    }

    #[test]
    fn the_same_seed_yields_the_same_prices() {
        // Proves the walk is a function of its seed: replaying it gives the same sequence.
        assert_eq!(walk(7, dec!(150.25), 50), walk(7, dec!(150.25), 50));
    }

    #[test]
    fn different_seeds_yield_different_prices() {
        // Proves the seed matters: two seeds part ways within a short walk.
        assert_ne!(walk(7, dec!(150.25), 50), walk(8, dec!(150.25), 50));
    }

    #[test]
    fn a_price_never_falls_below_one_cent() {
        // Proves the floor: a 100% fall, or any fall from one cent, stops at one cent.
        assert_eq!(apply_move(dec!(5.00), -10_000), MIN_PRICE);
        assert_eq!(apply_move(MIN_PRICE, -1), MIN_PRICE);
        assert_eq!(apply_move(dec!(0.00000001), 0), MIN_PRICE);
        assert_eq!(apply_move(dec!(-3), 10), MIN_PRICE);
    }

    #[test]
    fn a_price_never_rises_past_what_the_column_holds() {
        // Proves the ceiling: the walk stays inside DECIMAL(18, 8), even from an absurd price.
        assert_eq!(apply_move(MAX_PRICE, 10_000), MAX_PRICE);
        assert_eq!(apply_move(Decimal::MAX, 10_000), MAX_PRICE);
    }

    #[test]
    fn a_move_rounds_towards_the_unmoved_price() {
        // Proves rounding never enlarges a move: +1 bp of 1.00 is 1.0001, which stays 1.00.
        assert_eq!(apply_move(dec!(1.00), 1), dec!(1.00));
        assert_eq!(apply_move(dec!(1.00), -1), dec!(1.00));
        assert_eq!(apply_move(dec!(150.25), 100), dec!(151.75));
        assert_eq!(apply_move(dec!(150.25), -100), dec!(148.75));
        assert_eq!(apply_move(dec!(150.25), 20_000), dec!(300.50), "clamped to +100%");
    }

    fn cents() -> impl Strategy<Value = Decimal> {
        prop_oneof![
            (1_i64..=100).prop_map(|c| Decimal::new(c, 2)),
            (1_i64..=100_000_000).prop_map(|c| Decimal::new(c, 2)),
            (999_999_999_000_i64..=999_999_999_999).prop_map(|c| Decimal::new(c, 2)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        /// On the cent grid: stays there, within the bounds, moving at most max_step_bps.
        #[test]
        fn a_step_stays_on_the_cent_grid_within_its_bound(
            price in cents(),
            max_step_bps in prop_oneof![0_u32..=100, 0_u32..=12_000],
            seed in any::<u64>(),
        ) {
            // Proves the walk's laws for one step from any cent price and any bound.
            let next = walk_step(price, max_step_bps, &mut StdRng::seed_from_u64(seed));
            prop_assert!(next >= MIN_PRICE && next <= MAX_PRICE, "{next} out of bounds");
            prop_assert!(next.scale() <= PRICE_SCALE, "{next} has more than cents");
            prop_assert!((next - price).abs() <= allowed(price, max_step_bps), "{price} -> {next}");
            prop_assert_eq!(check_positive_amount(next), Ok(()));
        }

        /// A hand-set price off the cent grid snaps onto it within a cent of the bound.
        #[test]
        fn an_off_grid_price_snaps_to_cents_within_a_cent_of_its_bound(
            units in 1_i64..=10_000_000_000_000,
            max_step_bps in 0_u32..=500,
            seed in any::<u64>(),
        ) {
            // Proves set_price may leave 8 decimal places and the next step still lands on cents.
            let price = Decimal::new(units, 8);
            let next = walk_step(price, max_step_bps, &mut StdRng::seed_from_u64(seed));
            prop_assert!(next.scale() <= PRICE_SCALE);
            prop_assert!(next >= MIN_PRICE);
            if price >= MIN_PRICE {
                prop_assert!((next - price).abs() < allowed(price, max_step_bps) + MIN_PRICE);
            }
        }

        /// A long walk keeps every law at every step and replays from its seed.
        #[test]
        fn a_long_walk_keeps_its_laws_and_replays(
            start in cents(),
            max_step_bps in 1_u32..=1_000,
            seed in any::<u64>(),
        ) {
            // Proves the laws compose over many steps and the seed fixes the whole path.
            let path = walk(seed, start, max_step_bps);
            let mut previous = start;
            for &price in &path {
                prop_assert!(price >= MIN_PRICE && price <= MAX_PRICE && price.scale() <= PRICE_SCALE);
                prop_assert!((price - previous).abs() <= allowed(previous, max_step_bps));
                previous = price;
            }
            prop_assert_eq!(path, walk(seed, start, max_step_bps));
        }
    }
}
