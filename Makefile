# `sam build` runs these (template.yaml: `BuildMethod: makefile`; samconfig.toml builds in
# the source tree, so the four functions share one target directory and its compiled
# dependencies). Each function is a static musl binary for arm64, cross-compiled by
# cargo-lambda with zig: no shared libraries to load or keep resident, no glibc version to
# match. docs/deploy.md says why, docs/performance.md what it measured.
TARGET := aarch64-unknown-linux-musl
LAMBDA_DIR := $(or $(CARGO_TARGET_DIR),target)/lambda

build-RegisterFunction:
	$(call function,register)
build-LoginFunction:
	$(call function,login)
build-ChatFunction:
	$(call function,chat)
build-TokensFunction:
	$(call function,tokens)

define function
cargo lambda build --release --locked --target $(TARGET) --bin $(1)
cp "$(LAMBDA_DIR)/$(1)/bootstrap" "$(ARTIFACTS_DIR)/bootstrap"
endef

.PHONY: build-RegisterFunction build-LoginFunction build-ChatFunction build-TokensFunction
