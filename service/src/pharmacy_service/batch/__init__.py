"""Batch scoring on Apache Spark (the ``spark`` extra): ``spark_udf`` for the pharmacy model
(:mod:`.spark`) and the ``pharmacy-batch`` command (:mod:`.cli`)."""
