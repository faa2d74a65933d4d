# The inference function as a Lambda container image (CDK builds it at deploy time with the
# repository root as context: `cdk deploy -c inferenceImage=true [-c bakeRegistry=DIR]`).
# Built on Amazon Linux 2023 so the binary links against the glibc Lambda runs.

FROM public.ecr.aws/amazonlinux/amazonlinux:2023 AS build
RUN dnf install -y gcc gcc-c++ make cmake tar gzip python3-pip unzip && dnf clean all
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
# ONNX Runtime for the models tract cannot serve: the onnxruntime wheel's library, for this
# architecture, at /opt/lib/libonnxruntime.so (where the function looks without configuration).
RUN version=$(sed -n 's/^onnxruntime==//p' scripts/requirements-test.txt) && \
    m=$(uname -m) && python3 -m pip download --no-deps --only-binary=:all: --python-version 3.11 \
      --platform manylinux_2_34_$m --platform manylinux_2_28_$m --platform manylinux_2_27_$m \
      -d /tmp/ort "onnxruntime==$version" && \
    unzip -q /tmp/ort/onnxruntime-*.whl 'onnxruntime/capi/libonnxruntime.so*' -d /tmp/ort && \
    mkdir -p /opt/lib && cp /tmp/ort/onnxruntime/capi/libonnxruntime.so* /opt/lib/libonnxruntime.so

FROM public.ecr.aws/lambda/provided:al2023
# A registry folder made by `modelctl bake DIR MODEL=FILE...` (served read-only from /opt/models,
# MODEL_ROOT=/opt/models, no hot reload), or none.
ARG BAKED_REGISTRY=infra/docker/no-models
COPY ${BAKED_REGISTRY} /opt/models
COPY --from=build /src/target/release/inference ${LAMBDA_RUNTIME_DIR}/bootstrap
COPY --from=build /opt/lib/libonnxruntime.so /opt/lib/libonnxruntime.so
ENV MODEL_ROOT=/mnt/models
CMD ["bootstrap"]
