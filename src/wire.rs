//! JSON shapes shared by every format the engine speaks to the outside (HTTP,
//! RabbitMQ, remote services): decimals go out as JSON numbers, as the seeds
//! show, written from their exact text so nothing passes through a float.

/// `#[serde(with = "crate::wire::exact_number")]`: a decimal as an exact JSON
/// number (`1502.50`, scale kept); numbers and strings are both read.
pub use rust_decimal::serde::arbitrary_precision as exact_number;
/// [`exact_number`] for optional decimals; `None` is `null`.
pub use rust_decimal::serde::arbitrary_precision_option as exact_number_option;

use std::fmt;
use std::marker::PhantomData;

use serde::de::{value::MapAccessDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// A body that must be a JSON object. serde's derive also reads a struct
/// from an array of its fields in declaration order, a shape no contract
/// here allows: the fuzzer found `["AAPL","LIMIT","BUY",10,150.25]` accepted
/// as an order over HTTP, and an array accepted on `orders.submit`. `T`'s own
/// rules (unknown and duplicate fields refused) still apply inside the object.
#[derive(Debug, Clone)]
pub struct ObjectOnly<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Object<T> {
            type Value = T;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(Object(PhantomData)).map(ObjectOnly)
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;
    use rust_decimal_macros::dec;
    use serde::Serialize;

    use super::*;

    #[derive(Serialize)]
    struct Sample {
        #[serde(with = "exact_number")]
        total: Decimal,
        #[serde(with = "exact_number_option")]
        price: Option<Decimal>,
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Fields {
        symbol: String,
        quantity: u32,
    }

    #[test]
    fn an_object_is_read_and_an_array_of_the_same_fields_is_refused() {
        // Proves the array shape serde's derive accepts is refused, and an object's own rules still hold.
        let read: ObjectOnly<Fields> = serde_json::from_str(r#"{"symbol":"AAPL","quantity":10}"#).unwrap();
        assert_eq!(
            read.0,
            Fields {
                symbol: "AAPL".into(),
                quantity: 10
            }
        );
        let array = serde_json::from_str::<ObjectOnly<Fields>>(r#"["AAPL",10]"#).unwrap_err();
        assert!(array.to_string().contains("expected a JSON object"), "{array}");
        assert!(serde_json::from_str::<ObjectOnly<Fields>>(r#"{"symbol":"A","symbol":"B","quantity":1}"#).is_err());
        assert!(serde_json::from_str::<ObjectOnly<Fields>>(r#"{"symbol":"A","quantity":1,"x":2}"#).is_err());
    }

    #[test]
    fn decimals_go_out_as_exact_numbers() {
        // Proves the scale and every digit survive: no float in between.
        let json = serde_json::to_string(&Sample {
            total: dec!(1502.50),
            price: Some(dec!(0.00000001)),
        })
        .unwrap();
        assert_eq!(json, r#"{"total":1502.50,"price":0.00000001}"#);
        let none = serde_json::to_string(&Sample {
            total: dec!(1),
            price: None,
        })
        .unwrap();
        assert_eq!(none, r#"{"total":1,"price":null}"#);
    }
}
