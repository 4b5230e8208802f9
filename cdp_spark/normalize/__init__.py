"""Value normalizers shared by the stages that must recognise a person: standardize (bronze -> silver), privacy
(erasure requests and bronze rows matched on the fly) and the sample generator. One module per kind of value
(emails, phones, names, addresses, dates, text), configured by the rules in :mod:`cdp_spark.normalize.rules`."""
