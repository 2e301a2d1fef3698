# The example handler (handler setting: function.handler). $1 is the event (JSON); stdout is the
# response; stderr is the log.
handler() {
    echo "handling $REQUEST_ID" >&2
    printf '{"message":"hello from busybox sh","requestId":"%s","functionName":"%s","event":%s}\n' \
        "$REQUEST_ID" "$AWS_LAMBDA_FUNCTION_NAME" "${1:-null}"
}
