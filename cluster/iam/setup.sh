#!/usr/bin/env bash
# One-time AWS IAM set-up for cluster/aws.yaml (run it where the aws CLI has IAM rights, e.g. an admin profile):
#
#   cluster/iam/setup.sh BUCKET        # BUCKET: the S3 bucket of --storage s3://BUCKET/... and --data s3://BUCKET/...
#
# Two EC2 roles, each in an instance profile of the same name (the names cluster/aws.yaml gives its nodes):
# - dsr-ray-worker (the GPU workers): read and write BUCKET, nothing else;
# - dsr-ray-head (the head): BUCKET too, EC2 to launch and end the workers (AmazonEC2FullAccess), iam:PassRole
#   on dsr-ray-worker (EC2 refuses to start an instance with a role its launcher may not pass: without it the
#   workers never start and the trials wait for ever) and ssm:GetParameters (aws.yaml's ImageIds are SSM
#   parameters that EC2 resolves for the launcher).
# Run again after changing the bucket: it only creates what is missing and rewrites the two inline policies.
set -euo pipefail
BUCKET=${1:?usage: cluster/iam/setup.sh BUCKET (the S3 bucket of --storage and --data)}
HEAD_ROLE=dsr-ray-head
HEAD_PROFILE=dsr-ray-head
WORKER_ROLE=dsr-ray-worker
WORKER_PROFILE=dsr-ray-worker
HERE=$(cd "$(dirname "$0")" && pwd)
ACCOUNT_ID=$(aws sts get-caller-identity --query Account --output text)

fill() {  # a policy file of this folder with its <PLACEHOLDERS> filled in
    sed -e "s/<BUCKET>/$BUCKET/g" -e "s/<ACCOUNT_ID>/$ACCOUNT_ID/g" -e "s/<WORKER_ROLE>/$WORKER_ROLE/g" "$HERE/$1"
}
role() {  # an EC2 role, created once
    aws iam get-role --role-name "$1" >/dev/null 2>&1 ||
        aws iam create-role --role-name "$1" --assume-role-policy-document "file://$HERE/ec2-trust.json" >/dev/null
}
profile() {  # an instance profile $1 holding role $2, created once
    aws iam get-instance-profile --instance-profile-name "$1" >/dev/null 2>&1 ||
        aws iam create-instance-profile --instance-profile-name "$1" >/dev/null
    aws iam get-instance-profile --instance-profile-name "$1" --query "InstanceProfile.Roles[].RoleName" \
        --output text | grep -qw "$2" ||
        aws iam add-role-to-instance-profile --instance-profile-name "$1" --role-name "$2"
}

role "$WORKER_ROLE"
aws iam put-role-policy --role-name "$WORKER_ROLE" --policy-name dsr-bucket --policy-document "$(fill bucket-access.json)"
profile "$WORKER_PROFILE" "$WORKER_ROLE"

role "$HEAD_ROLE"
aws iam put-role-policy --role-name "$HEAD_ROLE" --policy-name dsr-bucket --policy-document "$(fill bucket-access.json)"
aws iam put-role-policy --role-name "$HEAD_ROLE" --policy-name dsr-launch-workers \
    --policy-document "$(fill head-launch-workers.json)"
aws iam attach-role-policy --role-name "$HEAD_ROLE" --policy-arn arn:aws:iam::aws:policy/AmazonEC2FullAccess
profile "$HEAD_PROFILE" "$HEAD_ROLE"

echo "IAM ready: head profile $HEAD_PROFILE (may pass $WORKER_ROLE), worker profile $WORKER_PROFILE, bucket $BUCKET"
