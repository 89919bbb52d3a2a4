pub(crate) mod moto;
