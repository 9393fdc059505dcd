"""The emissions twin: cluster model, emission factors with provenance, targets, pathways and
what-if scenarios. Plain typed Python with no I/O beyond reading its own YAML data.

Entry points: ``twin.model.load_cluster``, ``twin.carriers.to_canonical``,
``twin.emissions.EmissionsCalculator``, ``twin.progress``, ``twin.scenarios.run_scenario``.
"""
