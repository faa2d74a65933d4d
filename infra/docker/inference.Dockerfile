# The inference function as a Lambda container image (CDK builds it at deploy time with the
# repository root as context: `cdk deploy -c inferenceImage=true [-c bakeRegistry=DIR]`).
# Built on Amazon Linux 2023 so the binary links against the glibc Lambda runs.

FROM public.ecr.aws/amazonlinux/amazonlinux:2023 AS build
RUN dnf install -y gcc gcc-c++ make cmake tar gzip && dnf clean all
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain 1.95
ENV PATH=/root/.cargo/bin:$PATH
WORKDIR /src
COPY . .
# The CPU baseline of every Lambda host of the architecture, as scripts/package.sh builds the zips.
ARG TARGETARCH
RUN case "${TARGETARCH:-$(uname -m)}" in \
      arm64|aarch64) cpu=neoverse-n1 ;; \
      *) cpu=x86-64-v3 ;; \
    esac && RUSTFLAGS="-C target-cpu=$cpu" cargo build --release --locked --bin inference

FROM public.ecr.aws/lambda/provided:al2023
# A registry folder made by `modelctl bake DIR MODEL=FILE...` (served read-only from /opt/models,
# MODEL_ROOT=/opt/models, no hot reload), or none.
ARG BAKED_REGISTRY=infra/docker/no-models
COPY ${BAKED_REGISTRY} /opt/models
COPY --from=build /src/target/release/inference ${LAMBDA_RUNTIME_DIR}/bootstrap
ENV MODEL_ROOT=/mnt/models
CMD ["bootstrap"]
