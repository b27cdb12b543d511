"""What masking settings may be, as plain data (no torch): config checks them, `masking` implements them."""

MASK_TOKEN_TYPES = ("blank", "eos", "mask")  # the token masked positions become, if the tokenizer has none
COLLATOR_TYPES = ("all_mask", "default")  # every chosen token masked, or BERT's 80/10/10
