"""Execute the product: the pristine tree, its rewrite and each series step, natively.

verify_tree(tree, names)              pristine tree vs its one-shot rewrite
verify_branch(repo, base, branch)     pristine base vs every commit of base..branch
run_mutants(tree, ...)                wrong rules (edited copies of rules/) executed
"""
from .check import StepReport, VerifyReport, run_variants, verify_branch, verify_tree
from .trees import Variant, VerifyError

__all__ = ["StepReport", "Variant", "VerifyError", "VerifyReport", "run_variants",
           "verify_branch", "verify_tree"]
